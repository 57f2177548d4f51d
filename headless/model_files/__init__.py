"""model_files"""
