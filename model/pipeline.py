"""WorldReel sampling: text + one image -> RGB video and its 4D scene.

diffusers' `CogVideoXImageToVideoPipeline` cannot drive the augmented DiT (it takes the latent
channels as `in_channels // 2`), so this pipeline runs the same CogVideoX-I2V loop on
diffusers components with the geometry-motion (gm) latents alongside (layout (B, F, C, h, w)):

1. the image (B, 3, H, W) in [-1, 1] is VAE-encoded (a posterior sample times the scaling
   factor, as in training) and zero-padded to the F latent frames: the I2V condition. Like
   diffusers' pipeline, and unlike training, no noise augmentation or dropout is applied;
2. RGB and gm latents start from one N(0, I) draw (`init_noise_sigma` is 1 for CogVideoX);
3. each step the DiT predicts v for both; with classifier-free guidance (`guidance_scale`
   > 1) v = v_uncond + g (v_cond - v_uncond) on RGB and gm alike, the unconditional branch
   using `negative_prompt` and the same image; the scheduler (`CogVideoXDDIMScheduler` or
   `CogVideoXDPMScheduler`) steps the channel concatenation [rgb | gm] at once, which equals
   stepping them apart since both act per element;
4. the last step's DiT forward also returns the tapped hidden states (the conditional half
   under guidance), which the temporal DPT head turns into depth, points, the 9-d camera,
   scene flow and dynamic-mask logits on the S = F key frames at video resolution, exactly
   as training feeds it (`model.train.Trainer.compute_losses`);
5. the VAE decodes the RGB latents to T = 1 + 4 (F - 1) frames.

Cameras: `decode_camera` gives c2w and K per key frame; c2w is then made relative to the
first predicted camera, c2w_k <- c2w_0^-1 c2w_k, so that c2w[0] = I exactly (LABELS.md).
Points and scene flow are left as predicted: the head is trained to give them in
first-frame coordinates directly, so only the camera branch's residual frame-0 pose is removed.

Reconstruction (`video=`): with a known RGB video the RGB latents are replaced before every
step by the clean latents noised to the step's level (one fixed noise draw), so only the gm
latents are generated and the head reads features of the given video (`model.evaluate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from model.builders import build_tiny_models
from model.camera import decode_camera
from model.checkpoints import has_head, load_head, read_train_config
from model.dit import GeoMotionDiT, rotary_embeddings
from model.dpt_head import TemporalDPTHead
from model.encoders import T5TextEncoder, VideoLatentEncoder, load_vae
from model.losses import load_scheduler

__all__ = ["WorldReelOutput", "WorldReelPipeline", "find_checkpoint", "make_scheduler"]

SCHEDULERS = ("dpm", "ddim")


@dataclass
class WorldReelOutput:
    """One call's results, batched over B samples, S key frames (every `stride`-th video frame).

    video: (B, T, 3, H, W) in [0, 1], None when not decoded;
    depth: (B, S, H, W) > 0; points: (B, S, H, W, 3) in first-frame coordinates;
    camera: (B, S, 9) as predicted (`model.camera` layout);
    c2w: (B, S, 4, 4) relative to the first key frame (c2w[:, 0] = I); K: (B, S, 3, 3) in pixels;
    scene_flow: (B, S-1, H, W, 3) key frame k -> k+1; mask_logits: (B, S, H, W);
    rgb_latents, gm_latents: (B, F, C, h, w) final latents (scaled, DiT layout);
    stride: video frames per key frame (the VAE's temporal compression).
    """

    video: torch.Tensor | None
    depth: torch.Tensor
    points: torch.Tensor
    camera: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    scene_flow: torch.Tensor
    mask_logits: torch.Tensor
    rgb_latents: torch.Tensor
    gm_latents: torch.Tensor
    stride: int


def make_scheduler(base: CogVideoXDDIMScheduler, kind: Literal["dpm", "ddim"]) -> CogVideoXDDIMScheduler | CogVideoXDPMScheduler:
    """The sampling scheduler with the training scheduler's noise schedule (v-prediction, zero SNR)."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
    cls = CogVideoXDPMScheduler if kind == "dpm" else CogVideoXDDIMScheduler
    return cls.from_config(base.config)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder (holds `dit/`), or the latest complete one of a run folder (`checkpoints/step_*`)."""
    root = Path(path)
    if (root / "dit").is_dir():
        return root
    found = sorted(p for p in (root / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists())
    if not found:
        raise FileNotFoundError(f"{root} is neither a checkpoint (no dit/) nor a run folder with checkpoints/step_*")
    return found[-1]


class WorldReelPipeline:
    """Augmented DiT + temporal DPT head + VAE + text encoder + scheduler (see the module docstring).

    Args:
        dit: the geometry-motion augmented, image-conditioned DiT.
        head: the temporal DPT head fed by `dit`'s tapped blocks.
        vae: frozen VAE wrapper (`VideoLatentEncoder`).
        text_encoder: captions (list[str]) -> (B, L, text_embed_dim).
        scheduler: a CogVideoX DDIM or DPM scheduler (v-prediction).
    """

    def __init__(
        self,
        dit: GeoMotionDiT,
        head: TemporalDPTHead,
        vae: VideoLatentEncoder,
        text_encoder: torch.nn.Module,
        scheduler: CogVideoXDDIMScheduler | CogVideoXDPMScheduler,
    ) -> None:
        if not dit.aug.image_cond_channels:
            raise ValueError("WorldReel samples from an image: the DiT needs image condition channels")
        if dit.config.patch_size_t is not None:
            raise ValueError("the DPT head reads one token frame per latent frame; patch_size_t models are not supported")
        if head.config.embed_dim != dit.config.num_attention_heads * dit.config.attention_head_dim:
            raise ValueError(f"head embed_dim {head.config.embed_dim} does not match the DiT's hidden size")
        if scheduler.config.prediction_type != "v_prediction":
            raise ValueError(f"expected a v-prediction scheduler, got {scheduler.config.prediction_type}")
        self.dit = dit.eval()
        self.head = head.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval()
        self.scheduler = scheduler
        vae_config = vae.vae.config
        self.spatial_scale = 2 ** (len(vae_config.block_out_channels) - 1)
        self.temporal_scale = int(vae_config.temporal_compression_ratio)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        pretrained: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scheduler: Literal["dpm", "ddim"] = "dpm",
    ) -> WorldReelPipeline:
        """Load what `model.train` saved (`model.checkpoints`): the DiT, the DPT head, `train_config.json`.

        Args:
            checkpoint: a checkpoint folder or a run folder (its latest checkpoint).
            pretrained: local diffusers folder of the base model (vae/, text_encoder/,
                tokenizer/, scheduler/) for "cogvideox-5b-i2v" runs; defaults to the run's own.
            dtype: of the DiT, VAE and text encoder; the head runs in float32.
        """
        ckpt = find_checkpoint(checkpoint)
        if not has_head(ckpt):
            raise ValueError(f"{ckpt} has no DPT head (a stage 1a checkpoint): sample from a stage 1b or 2 checkpoint")
        run = read_train_config(ckpt)
        folder = pretrained or run.get("weights")
        if run["config"] != "tiny" and not folder:
            raise ValueError(f"config {run['config']} needs the local diffusers folder it was trained from (--weights)")
        with torch.random.fork_rng(devices=[]):  # module constructors draw initial weights: leave the caller's RNG alone
            dit = GeoMotionDiT.from_pretrained(ckpt / "dit", torch_dtype=dtype)
            head = load_head(ckpt)
            if run["config"] == "tiny":
                vae, text, base_scheduler = _tiny_encoders(run, dit)
            else:
                vae = VideoLatentEncoder(load_vae(folder, torch_dtype=dtype))
                vae.vae.enable_tiling()  # 49 x 480 x 720 decodes in tiles: bounded memory
                text = T5TextEncoder(folder, max_length=dit.config.max_text_seq_length, torch_dtype=dtype)
                base_scheduler = load_scheduler(folder)
        pipe = cls(dit, head, vae.to(dtype), text.to(dtype), make_scheduler(base_scheduler, scheduler))
        return pipe.to(device)

    def to(self, device: torch.device | str) -> WorldReelPipeline:
        for module in (self.dit, self.head, self.vae, self.text_encoder):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @property
    def video_size(self) -> tuple[int, int, int]:
        """(T, H, W) the DiT was built for (fixed by learned positional embeddings in CogVideoX-5B-I2V)."""
        config = self.dit.config
        return config.sample_frames, config.sample_height * self.spatial_scale, config.sample_width * self.spatial_scale

    # ----------------------------------------------------------------- sampling
    def _check_inputs(self, image: torch.Tensor, video: torch.Tensor | None, num_frames: int) -> None:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be a (B, 3, H, W) tensor in [-1, 1], got {getattr(image, 'shape', type(image))}")
        multiple = self.spatial_scale * self.dit.config.patch_size
        if image.shape[2] % multiple or image.shape[3] % multiple:
            raise ValueError(f"image height and width must be multiples of {multiple}, got {tuple(image.shape[2:])}")
        if (num_frames - 1) % self.temporal_scale or num_frames < 1 + self.temporal_scale:
            raise ValueError(f"num_frames must be 1 + {self.temporal_scale} k with k >= 1, got {num_frames}")
        if video is not None and tuple(video.shape) != (image.shape[0], num_frames, *image.shape[1:]):
            raise ValueError(f"video must be {(image.shape[0], num_frames, *image.shape[1:])}, got {tuple(video.shape)}")

    def _encode_prompts(self, prompt: str | list[str], negative_prompt: str, batch: int, guided: bool) -> torch.Tensor:
        prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
        if len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for {batch} images")
        texts = ([negative_prompt] * batch if guided else []) + prompts
        return self.text_encoder(texts).to(self.device, self.dit_dtype)

    @property
    def dit_dtype(self) -> torch.dtype:
        return next(self.dit.parameters()).dtype

    def _step(
        self, v: torch.Tensor, t: torch.Tensor, previous_t: torch.Tensor | None, latents: torch.Tensor, state: dict, generator
    ) -> torch.Tensor:
        if isinstance(self.scheduler, CogVideoXDPMScheduler):
            latents, state["x0"] = self.scheduler.step(
                v, state.get("x0"), t, previous_t, latents, generator=generator, return_dict=False
            )
            return latents
        return self.scheduler.step(v, t, latents, generator=generator, return_dict=False)[0]

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt: str | list[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        negative_prompt: str = "",
        num_frames: int | None = None,
        generator: torch.Generator | None = None,
        video: torch.Tensor | None = None,
        decode_video: bool = True,
    ) -> WorldReelOutput:
        """Sample videos and their 4D scenes.

        Args:
            image: (B, 3, H, W) first frames in [-1, 1].
            prompt: one caption for all, or B captions.
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance weight; <= 1 turns guidance off.
            negative_prompt: caption of the unconditional branch.
            num_frames: video frames T (default: the DiT's `sample_frames`).
            generator: a CPU generator for every random draw (same seed, same result on any device).
            video: (B, T, 3, H, W) in [-1, 1] for reconstruction (see the module docstring).
            decode_video: decode the RGB latents (False skips the VAE decoder).
        """
        num_frames = num_frames or self.dit.config.sample_frames
        self._check_inputs(image, video, num_frames)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        generator = generator or torch.Generator().manual_seed(0)
        device, dtype = self.device, self.dit_dtype
        B, _, H, W = image.shape
        F = (num_frames - 1) // self.temporal_scale + 1
        h, w = H // self.spatial_scale, W // self.spatial_scale
        rgb_c, gm_c = self.dit.aug.rgb_channels, self.dit.aug.gm_channels
        guided = guidance_scale > 1.0

        text = self._encode_prompts(prompt, negative_prompt, B, guided)
        first = self.vae.sample(image.to(device)[:, None], generator)
        image_latents = torch.cat([first, first.new_zeros(B, F - 1, *first.shape[2:])], dim=1).to(dtype)
        known = None if video is None else self.vae.sample(video.to(device), generator)
        known_noise = None if video is None else torch.randn(known.shape, generator=generator).to(device)
        latents = torch.randn((B, F, rgb_c + gm_c, h, w), generator=generator).to(device)
        latents = latents * self.scheduler.init_noise_sigma
        rope = rotary_embeddings(self.dit.config, F, h, w, device=device)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        state: dict[str, Any] = {}
        hidden = None
        for i, t in enumerate(timesteps):
            if known is not None:
                latents[:, :, :rgb_c] = self.scheduler.add_noise(known, known_noise, t[None])
            last = i == len(timesteps) - 1
            x = self.scheduler.scale_model_input(latents, t).to(dtype)
            x, cond = (torch.cat([x, x]), torch.cat([image_latents, image_latents])) if guided else (x, image_latents)
            out = self.dit(
                x[:, :, :rgb_c],
                x[:, :, rgb_c:],
                text,
                t.expand(x.shape[0]),
                image_latents=cond,
                image_rotary_emb=rope,
                return_hidden_states=last,
            )
            v = torch.cat([out.rgb, out.gm], dim=2).float()
            if guided:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
            if last:
                hidden = [tokens[-B:] for tokens in out.hidden_states]
            previous_t = timesteps[i - 1] if i > 0 else None
            latents = self._step(v, t, previous_t, latents, state, generator).float()
        if known is not None:
            latents[:, :, :rgb_c] = known
        return self._outputs(latents, hidden, (H, W), decode_video)

    def _outputs(
        self, latents: torch.Tensor, hidden: list[torch.Tensor], size: tuple[int, int], decode_video: bool
    ) -> WorldReelOutput:
        rgb_c = self.dit.aug.rgb_channels
        frames = latents.shape[1]
        patch = self.dit.config.patch_size
        grid = (latents.shape[3] // patch, latents.shape[4] // patch)
        head_dtype = next(self.head.parameters()).dtype
        pred = self.head([tokens.to(head_dtype) for tokens in hidden], frames, grid, size)
        c2w, K = decode_camera(pred.camera.float(), *size)
        c2w = torch.linalg.inv(c2w[:, :1]) @ c2w
        c2w[:, 0] = torch.eye(4, dtype=c2w.dtype, device=c2w.device)  # exact, not up to inversion round-off
        video = self._decode(latents[:, :, :rgb_c]) if decode_video else None
        return WorldReelOutput(
            video=video,
            depth=pred.depth,
            points=pred.points,
            camera=pred.camera,
            c2w=c2w,
            K=K,
            scene_flow=pred.scene_flow,
            mask_logits=pred.mask_logits,
            rgb_latents=latents[:, :, :rgb_c],
            gm_latents=latents[:, :, rgb_c:],
            stride=self.temporal_scale,
        )

    def _decode(self, rgb_latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) scaled latents -> (B, T, 3, H, W) frames in [0, 1]."""
        vae = self.vae.vae
        z = rgb_latents.permute(0, 2, 1, 3, 4).to(vae.dtype) / self.vae.scaling_factor
        frames = vae.decode(z).sample.float()
        return ((frames.permute(0, 2, 1, 3, 4) + 1.0) / 2.0).clamp(0.0, 1.0)


def _tiny_encoders(run: dict[str, Any], dit: GeoMotionDiT) -> tuple[VideoLatentEncoder, torch.nn.Module, CogVideoXDDIMScheduler]:
    """The random tiny VAE, hash text encoder and scheduler a tiny run used. The tiny VAE is not
    saved with checkpoints; `model.train` builds it from the run's seed, so rebuilding it the
    same way gives the same weights."""
    config = dit.config
    scale = 8  # tiny_vae_config keeps CogVideoX's 8x spatial compression
    models = build_tiny_models(
        run["stage"], run["seed"], config.sample_frames, config.sample_height * scale, config.sample_width * scale
    )
    return models.vae, models.text, models.scheduler
