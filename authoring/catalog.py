"""The catalogue of shipped workflows: each graph described once (``graph``), titled for the
runner (``headless.prompts.titles``), with the Note that explains its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from headless.prompts import titles

from .graph import Graph, Node

ROLE_INSTRUCTION, ROLE_PROMPT, ROLE_NEGATIVE = titles.INSTRUCTION, titles.PROMPT, titles.NEGATIVE
ROLE_IMAGE, ROLE_REFERENCE, ROLE_SAVE = titles.IMAGE, titles.REFERENCE, titles.SAVE


EDIT_NOTE = (
    "Instruction editing. Load an 8-channel instruct model (InstructPix2Pix, MagicBrush, ...), write the edit "
    "as an instruction ('make it winter'), pick the image, Queue.\n"
    "text_cfg: how strongly the edit follows the instruction (7.5). image_cfg: how closely the result keeps to "
    "the input (1.5; 1.0-2.0). Edit too weak: raise text_cfg or lower image_cfg. Too much changes: raise image_cfg."
)


def edit_inputs(g: Graph, ckpt: str, patch=None, control=None):
    """Loader → (optional model/CLIP patch) → instruction + negative → (optional ControlNet) → conditioner."""
    loader = g.add("InstructUNetLoader", column=0, row=0, model_name=ckpt)
    model, clip = patch(loader) if patch else (loader.out(0), loader.out(1))
    pos = g.add("CLIPTextEncode", ROLE_INSTRUCTION, 1, 0, clip=clip, text="make it a snowy winter day")
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 1, clip=clip, text="")
    img = g.add("LoadImage", ROLE_IMAGE, 0, 2, image="example.png")
    p, n = pos.out(0), neg.out(0)
    if control:
        p, n = control(p, n, img)
    cond = g.add("InstructImageConditioning", column=2, row=0, positive=p, negative=n, vae=loader.out(2), image=img.out(0))
    return loader, model, cond, img


def finish(g: Graph, latent_ref, vae_ref, column: int) -> None:
    dec = g.add("VAEDecode", column=column, row=0, samples=latent_ref, vae=vae_ref)
    g.add("SaveImage", ROLE_SAVE, column + 1, 0, images=dec.out(0), filename_prefix=f"instruct/{g.name}")


def instruct_ksampler(
    g: Graph,
    column: int,
    model,
    positive,
    negative,
    latent,
    seed: int = 1371,
    steps: int = 20,
    text_cfg: float = 7.5,
    image_cfg: float = 1.5,
    sampler: str = "euler_ancestral",
    scheduler: str = "normal",
) -> Node:
    return g.add(
        "InstructKSampler",
        column=column,
        row=0,
        model=model,
        seed=seed,
        steps=steps,
        text_cfg=text_cfg,
        image_cfg=image_cfg,
        sampler_name=sampler,
        scheduler=scheduler,
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=1.0,
    )


def edit_sampler(g: Graph, loader: Node, model, cond: Node, **settings) -> None:
    ks = instruct_ksampler(g, 3, model, cond.out(0), cond.out(1), cond.out(2), **settings)
    finish(g, ks.out(0), loader.out(2), 4)


def ip_adapter(g: Graph, model, clip, prompt: str, negative: str, weight: float) -> Node:
    """Adapter loader + CLIP vision + reference image → IPAdapter-Instruct Apply (style task)."""
    ipl = g.add("IPAdapterInstructLoader", column=0, row=1, ipadapter_file="ip-adapter-instruct-sd15.bin")
    cv = g.add("CLIPVisionLoader", column=0, row=2, clip_name="CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")
    ref = g.add("LoadImage", ROLE_REFERENCE, 0, 3, image="example.png")
    return g.add(
        "IPAdapterInstructApply",
        column=1,
        row=0,
        model=model,
        ipadapter=ipl.out(0),
        clip_vision=cv.out(0),
        clip=clip,
        image=ref.out(0),
        task="style",
        instruction="",
        prompt=prompt,
        negative_prompt=negative,
        weight=weight,
        start_at=0.0,
        end_at=1.0,
        guidance="auto",
        instruct_cfg=6.0,
        image_cfg=1.0,
        auto_scale=True,
    )


IP2P = "checkpoints/instruct-pix2pix-00-22000.safetensors"
LCM_LORA = "lcm-lora-sdv1-5.safetensors"


def instruct_edit_sd15() -> Graph:
    g = Graph("instruct_edit_sd15", "Instruct edit (SD1.5)", EDIT_NOTE + "\nSD1.5 models: text_cfg 7.5, image_cfg 1.5, 20-30 steps.")
    loader, model, cond, _ = edit_inputs(g, IP2P)
    edit_sampler(g, loader, model, cond)
    return g


def instruct_edit_sdxl() -> Graph:
    g = Graph(
        "instruct_edit_cosxl",
        "Instruct edit (SDXL / CosXL Edit)",
        EDIT_NOTE + "\nSDXL-class edit models: CosXL Edit (its EDM v-prediction and scaled image latent are detected "
        "from the file) or sdxl-instructpix2pix-768. text_cfg about 5, image_cfg 1.5, dpmpp_2m karras 20 steps. "
        "Work near 1024x1024 (CosXL) or 768x768.",
    )
    loader, model, cond, _ = edit_inputs(g, "checkpoints/cosxl_edit.safetensors")
    edit_sampler(g, loader, model, cond, text_cfg=5.0, sampler="dpmpp_2m", scheduler="karras")
    return g


def instruct_edit_controlnet() -> Graph:
    g = Graph(
        "instruct_edit_controlnet",
        "Instruct edit + ControlNet",
        EDIT_NOTE + "\nA ControlNet (here an SD1.5 tile ControlNet fed the input image) keeps the structure. It is "
        "applied to positive and negative, and the sampler gives it to all three branches (the unconditional one "
        "included). Lower its strength if the edit cannot happen.",
    )

    def control(p, n, img):
        cn = g.add("ControlNetLoader", column=1, row=3, control_net_name="control_v11f1e_sd15_tile.pth")
        cna = g.add(
            "ControlNetApplyAdvanced",
            column=2,
            row=2,
            positive=p,
            negative=n,
            control_net=cn.out(0),
            image=img.out(0),
            strength=0.6,
            start_percent=0.0,
            end_percent=1.0,
        )
        return cna.out(0), cna.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, control=control)
    edit_sampler(g, loader, model, cond)
    return g


def instruct_edit_lora() -> Graph:
    g = Graph(
        "instruct_edit_lora",
        "Instruct edit in 6 steps with the LCM LoRA",
        EDIT_NOTE + "\nThe LCM LoRA for SD1.5 (latent-consistency/lcm-lora-sdv1-5) on the instruct model turns a 20-step "
        "edit into a 4-8-step one: LoRA strength 1.0, ModelSamplingDiscrete 'lcm', sampler lcm, scheduler sgm_uniform, "
        "6 steps, low guidance (text_cfg 1.5-2, image_cfg 1.0-1.3; image_cfg 1.0 skips a pass). Starting points, not "
        "the LoRA's published values (it was distilled on text-to-image SD1.5): raise steps to 8 if details smear. "
        "Any SD1.5 style LoRA loads the same way (then keep the 20-step settings).",
    )

    def lora(loader):
        node = g.add(
            "LoraLoader",
            column=1,
            row=3,
            model=loader.out(0),
            clip=loader.out(1),
            lora_name=LCM_LORA,
            strength_model=1.0,
            strength_clip=1.0,
        )
        lcm = g.add("ModelSamplingDiscrete", column=2, row=3, model=node.out(0), sampling="lcm", zsnr=False)
        return lcm.out(0), node.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, patch=lora)
    edit_sampler(g, loader, model, cond, steps=6, text_cfg=1.8, image_cfg=1.2, sampler="lcm", scheduler="sgm_uniform")
    return g


def instruct_edit_guider() -> Graph:
    g = Graph(
        "instruct_edit_guider",
        "Instruct edit with Instruct Guider + SamplerCustomAdvanced",
        EDIT_NOTE + "\nThe same guidance as a GUIDER, for custom sampling graphs (any sampler, scheduler or sigma "
        "manipulation). guidance_rescale 0.7 tames over-exposure at high text_cfg.",
    )
    loader, model, cond, _ = edit_inputs(g, IP2P)
    guider = g.add(
        "InstructGuider",
        column=3,
        row=0,
        model=model,
        positive=cond.out(0),
        negative=cond.out(1),
        text_cfg=7.5,
        image_cfg=1.5,
        guidance_rescale=0.0,
    )
    noise = g.add("RandomNoise", column=3, row=1, noise_seed=1371)
    sampler = g.add("KSamplerSelect", column=3, row=2, sampler_name="euler_ancestral")
    sigmas = g.add("BasicScheduler", column=3, row=3, model=model, scheduler="normal", steps=20, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        column=4,
        row=1,
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler.out(0),
        sigmas=sigmas.out(0),
        latent_image=cond.out(2),
    )
    dec = g.add("VAEDecode", column=5, row=0, samples=sca.out(0), vae=loader.out(2))
    g.add("SaveImage", ROLE_SAVE, 6, 0, images=dec.out(0), filename_prefix=f"instruct/{g.name}")
    return g


IP_NOTE = (
    "IPAdapter-Instruct: one adapter, the instruction says what to take from the reference image. task: everything, "
    "style, composition, object or face (or custom text). weight 0.6-0.8. Copy your prompt into the node's prompt "
    "field: the adapter's tokens depend on it. style/everything/face sample with plain CFG; composition/object use "
    "the 4-branch guidance of Instruct KSampler (instruct_cfg, image_cfg on the apply node)."
)


def ipadapter_sd15() -> Graph:
    g = Graph("ipadapter_instruct_sd15", "IPAdapter-Instruct (SD1.5): pick the task", IP_NOTE)
    ckpt = g.add("CheckpointLoaderSimple", column=0, row=0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    prompt = "a cat sitting in a sunny garden, best quality"
    negative = "monochrome, lowres, bad anatomy, worst quality, low quality"
    ipa = ip_adapter(g, ckpt.out(0), ckpt.out(1), prompt, negative, weight=0.8)
    pos = g.add("CLIPTextEncode", ROLE_PROMPT, 1, 2, clip=ckpt.out(1), text=prompt)
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 3, clip=ckpt.out(1), text=negative)
    empty = g.add("EmptyLatentImage", column=2, row=2, width=512, height=512, batch_size=1)
    ks = instruct_ksampler(
        g,
        2,
        ipa.out(0),
        pos.out(0),
        neg.out(0),
        empty.out(0),
        seed=52222246,
        steps=30,
        text_cfg=6.0,
        image_cfg=1.0,
        sampler="dpmpp_2m",
        scheduler="karras",
    )
    finish(g, ks.out(0), ckpt.out(2), 3)
    return g


def instruct_edit_ip_style() -> Graph:
    g = Graph(
        "instruct_edit_ip_style",
        "Instruct edit steered by an IPAdapter-Instruct style reference",
        EDIT_NOTE + "\nIPAdapter-Instruct on the instruct model takes the style of a second picture: the edit's full "
        "branch sees the adapter's positive tokens, the image-only and unconditional branches its negative ones. "
        "weight 0.5-0.7 so the instruction still leads.",
    )
    loader = g.add("InstructUNetLoader", column=0, row=0, model_name=IP2P)
    instruction = "turn it into a painting"
    ipa = ip_adapter(g, loader.out(0), loader.out(1), instruction, "", weight=0.6)
    img = g.add("LoadImage", ROLE_IMAGE, 0, 4, image="example.png")
    pos = g.add("CLIPTextEncode", ROLE_INSTRUCTION, 1, 2, clip=loader.out(1), text=instruction)
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 3, clip=loader.out(1), text="")
    cond = g.add(
        "InstructImageConditioning", column=2, row=2, positive=pos.out(0), negative=neg.out(0), vae=loader.out(2), image=img.out(0)
    )
    ks = instruct_ksampler(g, 2, ipa.out(0), cond.out(0), cond.out(1), cond.out(2))
    finish(g, ks.out(0), loader.out(2), 3)
    return g


def region_finish(g: Graph, latent_ref, vae_ref, original_ref, mask_ref, column: int) -> None:
    """Decode, paste back into the original inside the mask (exact pixels outside), save."""
    dec = g.add("VAEDecode", column=column, row=0, samples=latent_ref, vae=vae_ref)
    comp = g.add("InstructRegionComposite", column=column, row=1, edited=dec.out(0), original=original_ref, mask=mask_ref, feather=16)
    g.add("SaveImage", ROLE_SAVE, column + 1, 0, images=comp.out(0), filename_prefix=f"instruct/{g.name}")


def instruct_edit_mask() -> Graph:
    g = Graph(
        "instruct_edit_mask",
        "Instruct edit that stays where it belongs: automatic edit mask",
        EDIT_NOTE + "\nInstruct KSampler + Edit Mask finds where the instruction changes the image during the first "
        "mask_steps (0.4) from the two branches it evaluates anyway (no extra cost), then keeps everything outside that "
        "mask on the input image. mask_threshold lower = bigger mask; mask_blur = rounder mask. The composite puts "
        "the original pixels back outside the mask; the preview shows the mask (reuse it as region_mask).",
    )
    loader, model, cond, img = edit_inputs(g, IP2P)
    ks = g.add(
        "InstructKSamplerEditMask",
        column=3,
        row=0,
        model=model,
        seed=1371,
        steps=20,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler_ancestral",
        scheduler="normal",
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=1.0,
    )
    preview = g.add("MaskToImage", column=4, row=2, mask=ks.out(1))
    g.add("PreviewImage", "Edit mask", 5, 2, images=preview.out(0))
    region_finish(g, ks.out(0), loader.out(2), img.out(0), ks.out(1), 4)
    return g


def instruct_edit_region() -> Graph:
    g = Graph(
        "instruct_edit_region",
        "Instruct edit inside a painted region",
        EDIT_NOTE + "\nRight-click the Input image > Open in MaskEditor and paint where the edit may happen. Outside the "
        "painted region every step sees the input image's noised latent, so it is reconstructed, not regenerated "
        "(region_feather: soft edge inside the region, in pixels); the composite then restores the original pixels "
        "outside exactly. An unpainted image edits nothing.",
    )
    loader, model, cond, img = edit_inputs(g, IP2P)
    ks = instruct_ksampler(g, 3, model, cond.out(0), cond.out(1), cond.out(2))
    ks.inputs.update(region_mask=img.out(1), region_feather=16)
    region_finish(g, ks.out(0), loader.out(2), img.out(0), img.out(1), 4)
    return g


def instruct_merge() -> Graph:
    g = Graph(
        "instruct_merge",
        "Instruct Merge: edit with an SD1.5 fine-tune (DreamShaper 8)",
        EDIT_NOTE + "\nInstruct Merge adds (fine-tune - its base) to the instruct model, the first convolution "
        "included, so edits take the fine-tune's look. Here custom = DreamShaper 8 (Lykon), base = SD1.5 v1-5 (what it "
        "was trained from); swap in any SD1.5 fine-tune with the same base. strength 0.5-1.0 (lower keeps more editing "
        "ability). To keep the merged model, add core 'Checkpoint Save' after the merge.",
    )

    def merge(loader):
        custom = g.add("CheckpointLoaderSimple", "Fine-tune", 0, 1, ckpt_name="DreamShaper_8_pruned.safetensors")
        base = g.add("CheckpointLoaderSimple", "Base", 0, 1, ckpt_name="v1-5-pruned-emaonly.safetensors")
        merged = g.add("InstructMerge", column=1, row=2, instruct=loader.out(0), custom=custom.out(0), base=base.out(0), strength=1.0)
        return merged.out(0), loader.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, patch=merge)
    edit_sampler(g, loader, model, cond)
    return g


# ---- the other edit families: Load Diffusion Model, the model into the conditioner ----------------------------

FAMILY_NOTE = (
    "Instruction editing with {family} and the pack's samplers. The model is connected to Instruct Image Conditioning, "
    "which attaches the image the way {family} reads it and keeps it on its own pixel grid (size_mode 'pad': nothing "
    "cropped or resampled; Instruct Region Composite cuts the pad off, so input and output line up pixel for pixel). "
    "Paint a region on the Input image (MaskEditor) and connect it to the sampler's region_mask and the composite's mask "
    "to edit only there.\n"
)


@dataclass(frozen=True)
class Sampling:
    """A family workflow's sampler settings (ComfyUI's templates sample these families with euler / simple)."""

    text_cfg: float
    image_cfg: float
    steps: int = 20
    sampler: str = "euler"
    scheduler: str = "simple"


def family_edit(
    g: Graph, unet: str, vae: str, text, settings: Sampling, model_patch=None, guider: bool = False, resolution: str = "keep"
) -> None:
    """Load Diffusion Model (+ model patches) → the family's text → Instruct Image Conditioning (with the model) →
    Instruct KSampler (or Instruct Guider + SamplerCustomAdvanced) → VAE Decode → Instruct Region Composite → Save.

    ``text(g, model)`` adds the text encoding and returns (positive, negative) refs."""
    loader = g.add("UNETLoader", column=0, row=0, unet_name=unet, weight_dtype="default")
    model = model_patch(loader.out(0)) if model_patch else loader.out(0)
    vae_loader = g.add("VAELoader", column=0, row=3, vae_name=vae)
    img = g.add("LoadImage", ROLE_IMAGE, 0, 4, image="example.png")
    pos, neg = text(img)
    cond = g.add(
        "InstructImageConditioning",
        column=2,
        row=0,
        positive=pos,
        negative=neg,
        vae=vae_loader.out(0),
        image=img.out(0),
        size_mode="pad",
        latent_output="empty",
        model=model,
        resolution=resolution,
    )
    if guider:
        guide = g.add(
            "InstructGuider",
            column=3,
            row=0,
            model=model,
            positive=cond.out(0),
            negative=cond.out(1),
            text_cfg=settings.text_cfg,
            image_cfg=settings.image_cfg,
        )
        noise = g.add("RandomNoise", column=3, row=1, noise_seed=1371)
        sampler = g.add("KSamplerSelect", column=3, row=2, sampler_name=settings.sampler)
        sigmas = g.add("Flux2Scheduler", column=3, row=3, steps=settings.steps, width=1024, height=1024)
        sampled = g.add(
            "SamplerCustomAdvanced",
            column=4,
            row=1,
            noise=noise.out(0),
            guider=guide.out(0),
            sampler=sampler.out(0),
            sigmas=sigmas.out(0),
            latent_image=cond.out(2),
        ).out(0)
        column = 5
    else:
        ks = instruct_ksampler(
            g,
            3,
            model,
            cond.out(0),
            cond.out(1),
            cond.out(2),
            steps=settings.steps,
            text_cfg=settings.text_cfg,
            image_cfg=settings.image_cfg,
            sampler=settings.sampler,
            scheduler=settings.scheduler,
        )
        sampled, column = ks.out(0), 4
    dec = g.add("VAEDecode", column=column, row=0, samples=sampled, vae=vae_loader.out(0))
    comp = g.add(
        "InstructRegionComposite",
        column=column,
        row=1,
        edited=dec.out(0),
        original=img.out(0),
        feather=16,
        size_mode="pad",
        resolution=resolution,
    )
    g.add("SaveImage", ROLE_SAVE, column + 1, 0, images=comp.out(0), filename_prefix=f"instruct/{g.name}")


def clip_text(g: Graph, clip_ref, instruction: str, negative: str, guidance: float | None = None):
    pos = g.add("CLIPTextEncode", ROLE_INSTRUCTION, 1, 0, clip=clip_ref, text=instruction)
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 1, clip=clip_ref, text=negative)
    p = pos.out(0)
    if guidance is not None:
        p = g.add("FluxGuidance", column=1, row=2, conditioning=p, guidance=guidance).out(0)
    return p, neg.out(0)


def qwen_image_edit_2511() -> Graph:
    g = Graph(
        "instruct_edit_qwen_image_edit_2511",
        "Qwen-Image-Edit 2511 with image guidance and a pixel-exact result",
        FAMILY_NOTE.format(family="Qwen-Image-Edit")
        + "Settings from ComfyUI's 2511 template: 40 steps, cfg (text_cfg) 4, euler / simple, ModelSamplingAuraFlow 3.1, "
        "CFGNorm 1 (here it acts on the whole guidance). Instruct Text Encode (Qwen-Image-Edit) puts the image in the "
        "prompt's tokens, as core's encoder does, and also encodes the negative without it: image_cfg 1.0 samples the "
        "template's CFG; raise it (1.2-1.5) to keep more of the input, its unconditional branch then sees no image at "
        "all. Lightning LoRA (4 steps): text_cfg 1, image_cfg 1.",
    )

    def patch(model):
        shift = g.add("ModelSamplingAuraFlow", column=1, row=3, model=model, shift=3.1)
        return g.add("CFGNorm", column=1, row=4, model=shift.out(0), strength=1.0).out(0)

    def text(img):
        clip = g.add("CLIPLoader", column=0, row=1, clip_name="qwen_2.5_vl_7b_fp8_scaled.safetensors", type="qwen_image")
        enc = g.add(
            "InstructTextEncodeQwenImageEdit",
            ROLE_INSTRUCTION,
            1,
            0,
            clip=clip.out(0),
            prompt="make it a snowy winter day",
            negative_prompt=" ",
            image=img.out(0),
        )
        return enc.out(0), enc.out(1)

    settings = Sampling(4.0, 1.0, steps=40)
    family_edit(g, "qwen_image_edit_2511_bf16.safetensors", "qwen_image_vae.safetensors", text, settings, model_patch=patch)
    return g


def flux_kontext() -> Graph:
    g = Graph(
        "instruct_edit_flux_kontext",
        "Flux.1 Kontext [dev]: one pass a step, on the image's own grid",
        FAMILY_NOTE.format(family="Flux Kontext")
        + "Kontext is guidance-distilled: FluxGuidance 2.5 sets its strength (ComfyUI's template; diffusers uses 3.5), "
        "text_cfg = image_cfg = 1 is one model pass a step (the same as core BasicGuider). image_cfg 1.2-1.5 adds image "
        "guidance (three passes: the unconditional one without the reference). 20 steps, euler / simple. For Kontext's "
        "preferred sizes set resolution 'kontext' on the conditioner and the composite (the composite scales back).",
    )

    def text(img):
        clip = g.add(
            "DualCLIPLoader",
            column=0,
            row=1,
            clip_name1="clip_l.safetensors",
            clip_name2="t5xxl_fp8_e4m3fn_scaled.safetensors",
            type="flux",
        )
        return clip_text(g, clip.out(0), "make it a snowy winter day", "", guidance=2.5)

    settings = Sampling(1.0, 1.0)
    family_edit(g, "flux1-dev-kontext_fp8_scaled.safetensors", "ae.safetensors", text, settings)
    return g


def flux2() -> Graph:
    g = Graph(
        "instruct_edit_flux2",
        "Flux.2 [dev]: edit with Instruct Guider and Flux2Scheduler",
        FAMILY_NOTE.format(family="Flux.2")
        + "As ComfyUI's template: FluxGuidance 4, 20 steps, euler, Flux2Scheduler (its width/height: the image's size), "
        "one pass a step at text_cfg = image_cfg = 1. Flux.2's latent cell is 16 pixels (its grid: 16). More reference "
        "images: chain core ReferenceLatent after the conditioner.",
    )

    def text(img):
        clip = g.add("CLIPLoader", column=0, row=1, clip_name="mistral_3_small_flux2_fp8.safetensors", type="flux2")
        return clip_text(g, clip.out(0), "make it a snowy winter day", "", guidance=4.0)

    settings = Sampling(1.0, 1.0)
    family_edit(g, "flux2_dev_fp8mixed.safetensors", "flux2-vae.safetensors", text, settings, guider=True)
    return g


def omnigen2() -> Graph:
    g = Graph(
        "instruct_edit_omnigen2",
        "OmniGen2: text and image guidance, exactly as core DualCFGGuider",
        FAMILY_NOTE.format(family="OmniGen2")
        + "ComfyUI's template samples DualCFGGuider 5 / 2 with the negative without the reference: the same three "
        "branches, so text_cfg 5, image_cfg 2 here give the same image (tested bit for bit). 20 steps, euler / simple.",
    )

    def text(img):
        clip = g.add("CLIPLoader", column=0, row=1, clip_name="qwen_2.5_vl_fp16.safetensors", type="omnigen2")
        return clip_text(g, clip.out(0), "make it a snowy winter day", "blurry, low quality")

    settings = Sampling(5.0, 2.0)
    family_edit(g, "omnigen2_fp16.safetensors", "ae.safetensors", text, settings)
    return g


def hidream_e1_1() -> Graph:
    g = Graph(
        "instruct_edit_hidream_e1_1",
        "HiDream-E1.1: dual guidance with CFGNorm",
        FAMILY_NOTE.format(family="HiDream-E1.1")
        + "As ComfyUI's E1.1 template: text_cfg 3, image_cfg 1.5, CFGNorm 1, 20 steps, euler / simple (E1: 5 / 2, 28 "
        "steps, normal, near 768x768). HiDream reads the image beside the noise along the width, so its unconditional "
        "branch is the shorter sequence without it.",
    )

    def patch(model):
        return g.add("CFGNorm", column=1, row=3, model=model, strength=1.0).out(0)

    def text(img):
        clip = g.add(
            "QuadrupleCLIPLoader",
            column=0,
            row=1,
            clip_name1="clip_l_hidream.safetensors",
            clip_name2="clip_g_hidream.safetensors",
            clip_name3="t5xxl_fp8_e4m3fn_scaled.safetensors",
            clip_name4="llama_3.1_8b_instruct_fp8_scaled.safetensors",
        )
        return clip_text(g, clip.out(0), "make it a snowy winter day", "low quality, blurry, distorted")

    settings = Sampling(3.0, 1.5)
    family_edit(g, "hidream_e1_1_bf16.safetensors", "ae.safetensors", text, settings, model_patch=patch)
    return g


GRAPHS = [
    instruct_edit_sd15,
    instruct_edit_sdxl,
    instruct_edit_controlnet,
    instruct_edit_lora,
    instruct_edit_guider,
    ipadapter_sd15,
    instruct_edit_ip_style,
    instruct_edit_mask,
    instruct_edit_region,
    instruct_merge,
    qwen_image_edit_2511,
    flux_kontext,
    flux2,
    omnigen2,
    hidream_e1_1,
]
