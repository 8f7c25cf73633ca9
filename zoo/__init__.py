"""transformer-zoo: generate, publish and study populations of transformer models on the Hugging Face stack."""

__version__ = "0.1.0"
