"""Gradio web demo of the HVAE pipeline: sample, explore, reconstruct and download paired slices + tumour masks.

Run it with ``hvae-demo`` or ``python -m hvae_pipeline.demo.app`` (see :func:`hvae_pipeline.demo.app.main`).
"""
