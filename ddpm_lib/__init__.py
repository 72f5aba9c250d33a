"""ddpm_lib: the small library behind the DDPM-on-MNIST workbook, in the order of the course.

- ``schedule``   — the noise schedules β_t and every quantity derived from them
- ``model``      — the UNet ε_θ(x_t, t) with a sinusoidal time embedding
- ``diffusion``  — the forward process q(x_t | x_0), the training loss and the samplers
- ``data``       — the assignment's ``mnist_rgb`` folder: builders, checks and the Dataset
- ``runtime``    — the device, bf16 autocast and seeded random streams
- ``checkpoint`` — atomic checkpoint files, safe loading, configuration checks
- ``train``      — the training loop and the ``train`` command line
- ``generate``   — the 10,000 submission images and the diffusion-process grid
- ``fid``        — FID with pytorch-fid's own Inception network and arithmetic
- ``evaluator``  — the offline digit evaluator (a trained MNIST classifier's features)
- ``plots``      — one plotting style and figure saving for every notebook
- ``notebook``   — the notebooks' first cell: small or full mode, device, seeds, shared paths
- ``report``     — the report's figure pack and results table
"""

__version__ = "0.1.0"
