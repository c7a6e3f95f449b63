"""arco: semi-supervised medical image segmentation with ARCO (NeurIPS 2023).

The core of the package is :mod:`arco.sampling` (NS / SG / SAG pixel samplers). Training, data, models, losses and
evaluation live in their own sub-packages; the command-line tool is ``arco`` (see ``arco --help``).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
