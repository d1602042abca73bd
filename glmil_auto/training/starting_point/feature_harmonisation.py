"""Harmonising the scanner-dependent lesion features across centres, per fold (training and prediction).

Texture and intensity statistics of a lesion move by about one standard deviation between scanners
and protocols, even after the brain z-score of preprocessing; a model fitted on two centres then sees
shifted inputs at a third. A :class:`FeatureHarmoniser` is fitted on one fold's TRAINING cases (rows
= every lesion of every training case, kept by the network or not; batch = the case's centre, the
dataset's ``group_column``) with ComBat (``method="combat"``, empirical Bayes) or per-centre
standardisation (``method="centre"``) from
:mod:`glmil_auto.preprocessing.lesion_features.harmonisation`, and maps each case's stored lesion
features onto the pooled training scale; the case's patient aggregates (``case_features``) are then
recomputed from the harmonised lesions with the one implementation of them
(:func:`~glmil_auto.preprocessing.lesion_features.patients.patient_features`).

What is harmonised (:func:`harmonised_feature_names`): the intensity and texture features only -
the hand-crafted ``enhancement_*``, ``relative_intensity_mean``, ``relative_cv`` (the ``relative_*``
intensity ratios; ``relative_z``/``relative_y`` are positions and are not), ``interior_std``,
``histogram_entropy``, ``gradient_mean``, ``neighbour_contrast``, ``core_rim_difference``,
``flair_mean``, ``oedema_flair_*``, and every IBSI column ``t1c_*`` / ``flair_*``. Shape and size,
counts, flags, fractions of the lesion volume, oedema volumes, distances and positions do not depend
on a scanner's intensity scale and pass unchanged.

    harmoniser = FeatureHarmoniser.fit(properties, centres, lesion_names, case_names, method="combat")
    harmonised = harmoniser.transform(properties_of_a_case, "centre A")   # a copy; cached per case
    harmoniser = harmoniser.fit_new_centre(properties_of_the_new_centre, "centre C")  # prediction
    FeatureHarmoniser.from_dict(harmoniser.to_dict())                      # fold_<k>/harmonisation.json

A centre the harmoniser was not fitted on passes unchanged (a warning once per centre), unless
:meth:`FeatureHarmoniser.fit_new_centre` first estimated it from that centre's own, unlabelled cases
(``glmil_predict --harmonise``). With fewer than two training centres (or no ``group_column``, no
lesion features, or ``method=None``) the harmoniser is the identity and ``reason`` says why.
The object is picklable (augmentation workers) and keeps its transformed cases in a cache (the
loader reads every case many times; the trainer fills it with the training cases before the
workers are forked). Transforming a case the first time costs about 50 ms (the patient
aggregates), a cached one about 10 us.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glmil_auto.preprocessing.lesion_features.harmonisation import (
    CentreStandardisation,
    CombatModel,
    fit_centre_standardisation,
    fit_combat,
    harmonisation_from_dict,
)
from glmil_auto.preprocessing.lesion_features.stored_features import json_float, lesion_feature_matrix

logger = logging.getLogger(__name__)

FORMAT = "glmil_feature_harmonisation"
FORMAT_VERSION = 1
METHODS = ("combat", "centre")

# name patterns of the scanner-dependent (intensity and texture) lesion features
HARMONISED_PREFIXES = ("enhancement_", "relative_", "oedema_flair_", "t1c_", "flair_")
HARMONISED_NAMES = ("interior_std", "histogram_entropy", "gradient_mean", "neighbour_contrast", "core_rim_difference",
                    "flair_mean")
# positions that match a prefix above but are geometry, not intensity
NOT_HARMONISED = ("relative_z", "relative_y")


def harmonised_feature_names(names: Sequence[str]) -> list[str]:
    """The intensity and texture features among the lesion feature ``names``, in their order
    (see the module docstring)."""
    return [n for n in names
            if n not in NOT_HARMONISED and (n in HARMONISED_NAMES or n.startswith(HARMONISED_PREFIXES))]


def centre_label(value: Any) -> str | None:
    """A centre value as the harmoniser compares it (a string), None for a missing one."""
    try:
        if value is None or value != value:  # None, NaN and pandas' missing values
            return None
    except (TypeError, ValueError):  # pandas.NA has no truth value
        return None
    label = str(value)
    return label if label.strip() else None


class FeatureHarmoniser:
    """A fitted harmonisation of the lesion features of one fold (see the module docstring).

    ``model`` is None for the identity (``reason`` says why). ``training_centres`` are the centres
    of the fitting cases, ``added_centres`` those added later by :meth:`fit_new_centre`.
    """

    def __init__(self, method: str | None, lesion_feature_names: Sequence[str], case_feature_names: Sequence[str],
                 feature_names: Sequence[str], model: CombatModel | CentreStandardisation | None,
                 training_centres: Sequence[str] = (), added_centres: Sequence[str] = (),
                 n_lesions: Mapping[str, int] | None = None, n_cases: Mapping[str, int] | None = None,
                 reason: str | None = None):
        if model is not None and model.n_features != len(feature_names):
            raise ValueError(f"the harmonisation model has {model.n_features} features, {len(feature_names)} named")
        self.method = method if model is not None else None
        self.lesion_feature_names = list(lesion_feature_names)
        self.case_feature_names = list(case_feature_names)
        self.feature_names = list(feature_names) if model is not None else []
        self.model = model
        self.training_centres = [str(c) for c in training_centres]
        self.added_centres = [str(c) for c in added_centres]
        self.n_lesions = {str(k): int(v) for k, v in (n_lesions or {}).items()}
        self.n_cases = {str(k): int(v) for k, v in (n_cases or {}).items()}
        self.reason = reason
        self._columns = [self.lesion_feature_names.index(n) for n in self.feature_names]
        self._cache: dict[tuple[str, str], tuple[tuple, list[dict[str, Any]], dict[str, Any]]] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def identity(cls, reason: str, lesion_feature_names: Sequence[str] = (),
                 case_feature_names: Sequence[str] = ()) -> FeatureHarmoniser:
        """No harmonisation: every case passes unchanged; ``reason`` is recorded."""
        return cls(None, lesion_feature_names, case_feature_names, (), None, reason=reason)

    @classmethod
    def fit(cls, properties: Sequence[Mapping[str, Any]], centres: Sequence[Any], lesion_feature_names: Sequence[str],
            case_feature_names: Sequence[str], method: str | None = "combat",
            case_ids: Sequence[str] | None = None) -> FeatureHarmoniser:
        """Fit on the training cases: ``properties`` (preprocessing's, one per case), ``centres`` (the
        case's centre; None/NaN where unknown: its lesions are left out of the fit). ``method``:
        ``"combat"`` (empirical-Bayes ComBat), ``"centre"`` (per-centre standardisation) or None."""
        if method is not None and method not in METHODS:
            raise ValueError(f"unknown harmonisation method {method!r}; use one of {METHODS} or None")
        names = list(lesion_feature_names)
        if len(centres) != len(properties):
            raise ValueError(f"{len(centres)} centres for {len(properties)} cases")
        if method is None:
            return cls.identity("harmonisation is switched off (harmonisation = None)", names, case_feature_names)
        if not names:
            return cls.identity("the plans store no lesion features", names, case_feature_names)
        harmonised = harmonised_feature_names(names)
        if not harmonised:
            return cls.identity("none of the stored lesion features depends on the intensity scale", names,
                                case_feature_names)
        labels = [centre_label(c) for c in centres]
        ids = [str(c) for c in case_ids] if case_ids is not None else [str(p.get("case_id", i))
                                                                         for i, p in enumerate(properties)]
        n_cases: dict[str, int] = {}
        for label in labels:
            if label is not None:
                n_cases[label] = n_cases.get(label, 0) + 1
        if len(n_cases) < 2:
            which = f" ({next(iter(n_cases))})" if n_cases else ""
            return cls.identity(f"the training cases come from {len(n_cases)} centre(s){which}: nothing to harmonise "
                                "between", names, case_feature_names)
        rows, batches = [], []
        for props, label, case in zip(properties, labels, ids):
            if label is None:
                continue
            matrix = _feature_matrix(props, harmonised, case)
            rows.append(matrix)
            batches += [label] * matrix.shape[0]
        y = np.vstack(rows) if rows else np.zeros((0, len(harmonised)))
        n_lesions = {label: batches.count(label) for label in n_cases}
        with_lesions = [label for label, n in n_lesions.items() if n > 0]
        if len(with_lesions) < 2:
            return cls.identity(f"only {len(with_lesions)} training centre(s) have lesions: nothing to harmonise "
                                "between", names, case_feature_names)
        if method == "combat":
            model: CombatModel | CentreStandardisation = fit_combat(y, batches, empirical_bayes=True)
        else:
            model = fit_centre_standardisation(y, batches)
        return cls(method, names, case_feature_names, harmonised, model, training_centres=list(model.batches),
                   n_lesions=n_lesions, n_cases=n_cases)

    def fit_new_centre(self, properties: Sequence[Mapping[str, Any]], name: Any,
                       case_ids: Sequence[str] | None = None) -> FeatureHarmoniser:
        """A copy that also knows centre ``name``, estimated from that centre's own cases
        (``properties``, unlabelled; ComBat's ``fit_new_batch``). The identity stays the identity;
        a centre already known raises ``ValueError``."""
        label = centre_label(name)
        if label is None:
            raise ValueError("a new centre needs a name")
        if self.model is None:
            return self.copy()
        if self.knows(label):
            raise ValueError(f"centre {label!r} is already known to this harmoniser")
        ids = [str(c) for c in case_ids] if case_ids is not None else [str(p.get("case_id", i))
                                                                         for i, p in enumerate(properties)]
        rows = [_feature_matrix(p, self.feature_names, c) for p, c in zip(properties, ids)]
        y = np.vstack(rows) if rows else np.zeros((0, len(self.feature_names)))
        if isinstance(self.model, CombatModel):
            model = self.model.fit_new_batch(y, name=label, empirical_bayes=True)
        else:
            model = self.model.fit_new_batch(y, name=label)
        return FeatureHarmoniser(self.method, self.lesion_feature_names, self.case_feature_names, self.feature_names,
                                 model, self.training_centres, [*self.added_centres, label],
                                 {**self.n_lesions, label: int(y.shape[0])}, {**self.n_cases, label: len(rows)},
                                 self.reason)

    def copy(self) -> FeatureHarmoniser:
        return FeatureHarmoniser.from_dict(self.to_dict())

    # ------------------------------------------------------------------ queries
    @property
    def is_identity(self) -> bool:
        return self.model is None

    @property
    def centres(self) -> list[str]:
        """Every centre this harmoniser can transform (training and added)."""
        return [] if self.model is None else list(self.model.batches)

    def knows(self, centre: Any) -> bool:
        label = centre_label(centre)
        return self.model is not None and label is not None and label in self.model.batches

    def describe(self) -> dict[str, Any]:
        """A short JSON-safe summary (debug.json, prediction_settings.json)."""
        return {"method": self.method, "reason": self.reason, "training_centres": self.training_centres,
                "added_centres": self.added_centres, "n_cases": self.n_cases, "n_lesions": self.n_lesions,
                "n_features": len(self.feature_names), "features": self.feature_names}

    # ------------------------------------------------------------------ transform
    def transform(self, properties: dict[str, Any], centre: Any, case: str | None = None,
                  warn_unseen: bool = True) -> dict[str, Any]:
        """A copy of a case's properties with its lesion features harmonised as centre ``centre``
        and its ``case_features`` recomputed from them. The identity, a case without lesions, a
        missing centre and a centre this harmoniser does not know return ``properties`` itself
        (unchanged; an unknown centre is logged once, ``warn_unseen``). Cached per (case, centre)."""
        if self.model is None:
            return properties
        label = centre_label(centre)
        if label is None or label not in self.model.batches:
            if warn_unseen and label not in self._warned:
                self._warned.add(label)
                logger.warning("lesion features of centre %s pass unharmonised: the harmoniser was fitted on %s "
                               "(glmil_predict --harmonise fits a new centre from its own cases)",
                               "(unknown)" if label is None else repr(label), self.centres)
            return properties
        lesions = properties.get("lesions", [])
        if not lesions:
            return properties
        case_id = str(case if case is not None else properties.get("case_id"))
        signature = tuple(lesion.get("label") for lesion in lesions)
        cached = self._cache.get((case_id, label))
        if cached is None or cached[0] != signature:
            cached = (signature, *self._harmonise(properties, label, case_id))
            self._cache[(case_id, label)] = cached
        _, features, case_features = cached
        out = dict(properties)
        out["lesions"] = [{**lesion, "features": dict(f)} for lesion, f in zip(lesions, features)]
        if case_features is not None:
            out["case_features"] = dict(case_features)
        return out

    def _harmonise(self, properties: dict[str, Any], label: str, case: str
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        from glmil_auto.preprocessing.lesion_features.patients import patient_features
        from glmil_auto.preprocessing.lesion_features.stored_features import stored_lesion_frame

        lesions = properties["lesions"]
        y = _feature_matrix(properties, self.feature_names, case)
        harmonised = self.model.apply(y, [label] * y.shape[0])
        features = []
        for lesion, row in zip(lesions, harmonised):
            updated = dict(lesion["features"])
            updated.update({n: json_float(v) for n, v in zip(self.feature_names, row)})
            features.append(updated)
        if not self.case_feature_names:
            return features, None
        new = {**properties, "lesions": [{**lesion, "features": f} for lesion, f in zip(lesions, features)]}
        frame = stored_lesion_frame([new], [case], self.lesion_feature_names)
        aggregates = patient_features(frame, [case], self.lesion_feature_names).iloc[0]
        return features, {n: json_float(aggregates[n]) for n in self.case_feature_names}

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN as None); :meth:`from_dict` reads it back exactly."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "method": self.method, "reason": self.reason,
                "lesion_feature_names": self.lesion_feature_names, "case_feature_names": self.case_feature_names,
                "features": self.feature_names, "training_centres": self.training_centres,
                "added_centres": self.added_centres, "n_cases": self.n_cases, "n_lesions": self.n_lesions,
                "model": None if self.model is None else self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureHarmoniser:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a feature harmonisation record (format {data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported feature harmonisation version {data.get('version')!r}")
        model = None if data.get("model") is None else harmonisation_from_dict(dict(data["model"]))
        return cls(data.get("method"), data.get("lesion_feature_names", []), data.get("case_feature_names", []),
                   data.get("features", []), model, data.get("training_centres", []), data.get("added_centres", []),
                   data.get("n_lesions"), data.get("n_cases"), data.get("reason"))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # the cache travels (a pure function of the cases: a worker need not recompute it); warnings do not
        state["_cache"] = dict(self._cache)
        state["_warned"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        if self.model is None:
            return f"FeatureHarmoniser(identity: {self.reason})"
        return (f"FeatureHarmoniser({self.method}, {len(self.feature_names)} features, centres {self.centres})")


def _feature_matrix(properties: Mapping[str, Any], names: Sequence[str], case: str) -> np.ndarray:
    """(lesions, names) float64 of every lesion of a case (NaN where undefined)."""
    return lesion_feature_matrix(properties.get("lesions", []), names, case)


class CentreTransform:
    """``(case, properties) -> properties``: a harmoniser and each case's centre, for
    ``GLMILDataLoader(properties_transform=...)`` (picklable)."""

    def __init__(self, harmoniser: FeatureHarmoniser, centres: Mapping[str, Any]):
        self.harmoniser = harmoniser
        self.centres = {str(k): centre_label(v) for k, v in centres.items()}

    def __call__(self, case: str, properties: dict[str, Any]) -> dict[str, Any]:
        return self.harmoniser.transform(properties, self.centres.get(str(case)), case)


__all__ = ["FeatureHarmoniser", "CentreTransform", "harmonised_feature_names", "centre_label", "METHODS"]
