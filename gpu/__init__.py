"""The CuPy backend: the training step on an NVIDIA GPU, bit for bit the golden model's.

Importing this package needs no GPU; :func:`nitihw.gpu.backend.gpu_available` says whether one
can be used and, if not, why.
"""
