"""Gradio web demo of the HVAE pipeline: sample, explore, reconstruct and download paired slices + tumour masks.

Run it with ``hvae-demo`` or ``python -m demo.app`` (see :func:`demo.app.main`).
"""
