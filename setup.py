"""Build of the optional C extensions; everything else is in pyproject.toml.

``asyncsummary._native`` (the drain's framing and CRC-32C, run without the GIL) is
optional: without a C compiler the install still succeeds and the package falls back
to its pure-Python encoder (``asyncsummary._encoder.IMPLEMENTATION == "python"``).
``asyncsummary.torch._buckets`` (add_histogram's default buckets counted in one pass) is
optional too: without it, NumPy counts them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "asyncsummary._native",
            sources=["asyncsummary/_native.c", "asyncsummary/_queue.c", "asyncsummary/_lane.c"],
            depends=["asyncsummary/_native.h"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        ),
        Extension(
            "asyncsummary.torch._buckets",
            sources=["asyncsummary/torch/_buckets.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall"],
            optional=True,
        ),
    ]
)
