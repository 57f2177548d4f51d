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
    """A tiny CLIP_VISION (2 layers; ViT-H's width, or the narrow adapter's) for graphs: the real 632M encoder is too
    slow for tests."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"width": (["full", "narrow"],)}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "make"
    CATEGORY = "_for_testing"

    def make(self, width="full"):
        import instruct_tiny_models as factory

        return (factory.tiny_clip_vision(width=1280 if width == "full" else factory.NARROW_IMAGE_DIM),)


NODE_CLASS_MAPPINGS["InstructTestTinyClipVision"] = InstructTestTinyClipVision


def _sd15(width: str):
    import instruct_tiny_models

    return instruct_tiny_models.full_sd15() if width == "full" else instruct_tiny_models.narrow_sd15()


class InstructTestFullSD15:
    """The (random) SD1.5 checkpoint, plain or instruct, built in memory: full-size (``FullSD15``) or at a tenth
    of the width with the same topology (``NarrowSD15``). Stands in for CheckpointLoaderSimple / Instruct UNet
    Loader where a graph needs SD1.5's layout, without a 2 GB file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"kind": (["plain", "instruct"],)},
            "optional": {"weight_dtype": (["default", "fp16"],), "width": (["full", "narrow"],)},
        }

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, kind, weight_dtype="default", width="full"):
        return _sd15(width).load(kind, weight_dtype)


class InstructTestFullControlNet:
    """A (random) SD1.5 ControlNet built in memory, full-size or narrow (to match the UNet): stands in for ControlNetLoader."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"width": (["full", "narrow"],)}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, width="full"):
        return (_sd15(width).controlnet(),)


NODE_CLASS_MAPPINGS["InstructTestFullSD15"] = InstructTestFullSD15
NODE_CLASS_MAPPINGS["InstructTestFullControlNet"] = InstructTestFullControlNet


PROBES: list = []


def _tensors(prefix: str, value, out: dict) -> None:
    """Every tensor in a (nested) conditioning value, by a dotted name."""
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _tensors(f"{prefix}.{i}", item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            _tensors(f"{prefix}.{key}", item, out)


class InstructTestDeviceProbe:
    """Records, at every UNet call of a sampled model, where each input tensor lives and how much of
    the model's weights ComfyUI holds on its load device (the GPU tier's placement checks)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_for_testing"

    def patch(self, model):
        m = model.clone()

        def probe(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
            # Recorded at the UNet's own forward (a DIFFUSION_MODEL wrapper), after core's apply_model has
            # cast its inputs: core keeps c_crossattn wherever the text encoder left it (often the CPU) and
            # moves it in BaseModel._apply_model, so what matters is where tensors are when the UNet runs.
            found: dict = {}
            _tensors("x", x, found)
            _tensors("timesteps", timesteps, found)
            _tensors("context", context, found)
            _tensors("y", y, found)
            _tensors("kwargs", kwargs, found)
            PROBES.append(
                {
                    "devices": {name: str(t.device) for name, t in found.items()},
                    "loaded": m.loaded_size(),
                    "size": m.model_size(),
                    "weight_dtype": str(m.model.get_dtype()),
                    "manual_cast": str(m.model.manual_cast_dtype),
                    "load_device": str(m.load_device),
                }
            )
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

        import comfy.patcher_extension

        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "instruct_test_device_probe", probe)
        return (m,)


NODE_CLASS_MAPPINGS["InstructTestDeviceProbe"] = InstructTestDeviceProbe


DTYPES: list = []


class InstructTestRecordDtypes:
    """Records, for every UNet call of a real sampling run, the dtype the UNet's weights are stored in,
    the dtype it computes in (an activation inside its first input block) and the dtype of what it
    returns to the sampler — the evidence that a precision mode really computes in that precision."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_for_testing"

    def patch(self, model):
        seen: dict = {}

        def activation(h, transformer_options):
            seen.setdefault("activation", h.dtype)
            return h

        def record(apply_model, args):
            seen.clear()
            base = apply_model.__self__
            weight = base.diffusion_model.input_blocks[0][0].weight
            out = apply_model(args["input"], args["timestep"], **args["c"])
            DTYPES.append({"weight": weight.dtype, "activation": seen.get("activation"), "output": out.dtype})
            return out

        m = model.clone()
        m.set_model_input_block_patch(activation)
        m.set_model_unet_function_wrapper(record)
        return (m,)


NODE_CLASS_MAPPINGS["InstructTestRecordDtypes"] = InstructTestRecordDtypes


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


# ---- the edit families: tiny models of ComfyUI's own classes standing in for the published files -----------

FAMILY_KINDS = ["flux_kontext", "flux2", "qwen_image_edit", "omnigen2", "hidream_e1"]


class InstructTestTinyFamilyModel:
    """A tiny random-weight edit model of ComfyUI's own class for a family (``family_models.tiny_model``):
    stands in for UNETLoader (Load Diffusion Model) with the published file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (FAMILY_KINDS,)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, family):
        import family_models

        return (family_models.tiny_model(family),)


class InstructTestTinyFamilyVAE:
    """The family's tiny VAE, loaded from its file as VAELoader would load the published one."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (FAMILY_KINDS,)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, family):
        import folder_paths

        import family_models

        from pathlib import Path

        return (family_models.tiny_vae(family, Path(folder_paths.get_folder_paths("vae")[0]).parent),)


class InstructTestTinyQwenCLIP:
    """A small Qwen2.5-VL text encoder of ComfyUI's own classes, with its real tokenizer: stands in for CLIPLoader
    (type qwen_image), so the text encode nodes of a Qwen-Image-Edit graph run for real."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self):
        import family_models

        return (family_models.tiny_qwen_edit_clip(),)


class InstructTestFamilyText:
    """Conditioning shaped as the family's text encoder gives it, seeded by the text (the large text encoders of
    these families have fixed widths in ComfyUI): stands in for CLIPTextEncode."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (FAMILY_KINDS,), "text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "_for_testing"

    def encode(self, family, text):
        import zlib

        import family_models

        return (family_models.text_conditioning(family, seed=zlib.crc32(text.encode())),)


NODE_CLASS_MAPPINGS["InstructTestTinyFamilyModel"] = InstructTestTinyFamilyModel
NODE_CLASS_MAPPINGS["InstructTestTinyFamilyVAE"] = InstructTestTinyFamilyVAE
NODE_CLASS_MAPPINGS["InstructTestTinyQwenCLIP"] = InstructTestTinyQwenCLIP
NODE_CLASS_MAPPINGS["InstructTestFamilyText"] = InstructTestFamilyText
