"""glmil_auto: self-configuring GL-MIL MoE outcome prediction from medical images.

Kept light on purpose: importing the package must not import torch or SimpleITK, so that
command-line tools start fast. Import the stage you need (``glmil_auto.dataset``, ...).
"""

__version__ = "0.1.0"
