"""One request's denoising: the canvas (canvas.py), its schedule (schedules.py), and sampling
(sampling.py for LLaDA, dream_sampling.py for Dream's `diffusion_generate`)."""
