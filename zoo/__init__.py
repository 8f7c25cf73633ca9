"""transformer-zoo: generate, publish and study populations of transformer models on the Hugging Face stack."""

__version__ = "0.1.0"

from zoo.environment import check_tested_majors  # noqa: E402

check_tested_majors()
