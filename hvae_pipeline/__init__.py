"""hvae-pipeline"""
