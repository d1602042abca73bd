"""Per-lesion radiomic features, computed once in preprocessing and stored with each case.

One implementation of each feature lives here, at the preprocessing stage; the network's starting
point (``glmil_auto.training.starting_point.radiomics_offset_fit``), the radiomics peer
(``glmil_auto.evaluation.radiomics_peer``) and the benchmarks read what preprocessing stored, and
nothing here imports a later stage.

Modules (one job each): ``channels`` (which channel is T1c / FLAIR), ``lesion_frame`` (the
hand-crafted columns and their neutral values), ``shape``, ``mesh_shape``, ``enhancement`` and
``surroundings`` (the hand-crafted measurements), ``ibsi`` (the IBSI families computed with mirp),
``features`` (every feature of one case), ``patients`` (patient aggregates), ``dataset_features``
(a raw dataset split in a process pool), ``harmonisation`` (ComBat and per-centre standardisation)
and ``settings`` (the feature set and its settings as the plans record them).
"""
