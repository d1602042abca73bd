"""Planner variants: each changes one rule of ``GLMILPlanner`` (select with ``--planner NAME``)."""

from __future__ import annotations

from glmil_auto.experiment_planning.planners.default_planner import GLMILPlanner


class GLMILPlannerWideContext(GLMILPlanner):
    """Adds a 4x field of view around every lesion (for datasets where peritumoural context,
    such as contact with the ventricles or the pia, matters more than fine texture)."""

    context_scales = (1.0, 2.0, 4.0)


class GLMILPlannerSingleScale(GLMILPlanner):
    """One field of view per lesion: the cheapest local branch (an ablation of multiscale context)."""

    context_scales = (1.0,)


class GLMILPlannerDeepResidual(GLMILPlanner):
    """Deeper residual encoders (more blocks per stage, as nnU-Net's ResEnc L) for a GPU plan; the
    plans name them (``arch_kwargs.blocks_per_stage``), so the trainer needs no change. Memory is
    measured like any plan, so a deeper encoder trades batch or resolution where it must."""

    blocks_per_later_stage = {"cpu": 1, "cuda": 3}


class GLMILPlannerNoLesionFeatures(GLMILPlanner):
    """No radiomic features in preprocessing: the network's starting point is then the clinical +
    volumetric model (what earlier versions planned); ``benchmarks/preprocess.py`` times both."""

    lesion_features = False


class GLMILPlannerHandCraftedFeatures(GLMILPlanner):
    """The hand-crafted lesion features without mirp's IBSI families (cheaper preprocessing)."""

    ibsi_features = False


class GLMILPlannerNoSmallFoci(GLMILPlanner):
    """No small-foci channel in the global volume and no per-case foci descriptor (what earlier
    versions planned); ``benchmarks/preprocess.py --without-foci`` times both."""

    small_foci = False
