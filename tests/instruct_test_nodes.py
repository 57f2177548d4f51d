"""A test-only custom node (loaded by the harness, never shipped): records every batched UNet call
of a model inside a real graph, so graph tests can assert what each branch received."""

CALLS: list = []


class InstructTestRecordUNetCalls:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_for_testing"

    def patch(self, model):
        def record(apply_model, args):
            control = args["c"].get("control")
            norms = None
            if control is not None:
                first = next(t for t in control["output"] if t is not None)
                norms = [float(x.norm()) for x in first.chunk(len(args["cond_or_uncond"]))]
            CALLS.append({"branches": list(args["cond_or_uncond"]), "control_chunk_norms": norms})
            return apply_model(args["input"], args["timestep"], **args["c"])

        m = model.clone()
        m.set_model_unet_function_wrapper(record)
        return (m,)


NODE_CLASS_MAPPINGS = {"InstructTestRecordUNetCalls": InstructTestRecordUNetCalls}


class InstructTestTinyClipVision:
    """A tiny CLIP_VISION (ViT-H width, 2 layers) for graphs: the real 632M encoder is too slow for tests."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "make"
    CATEGORY = "_for_testing"

    def make(self):
        import instruct_tiny_models

        return (instruct_tiny_models.tiny_clip_vision(),)


NODE_CLASS_MAPPINGS["InstructTestTinyClipVision"] = InstructTestTinyClipVision


class InstructTestFloatFromText:
    """A FLOAT from text ('inf', '-inf', 'nan'): core's Float node refuses ±inf at validation, so a
    linked non-finite value needs its own source."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "0"})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "make"
    CATEGORY = "_for_testing"

    def make(self, text):
        return (float(text),)


NODE_CLASS_MAPPINGS["InstructTestFloatFromText"] = InstructTestFloatFromText
