"""The radiomics peer: lesion features against known answers (the synthetic truth file and
hand-made phantoms), patient aggregation, the clinical design matrix, and the models (the noisy-OR
recovers known coefficients and equals a brute-force computation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, optimize
from scipy.stats import spearmanr

from glmil_auto.dataset.dataset_json import load_dataset_json
from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.evaluation import radiomics_peer as rp
from glmil_auto.synthetic import generate_synthetic_dataset, load_truth

from handmade_dataset import CASES_TR

FEATURES = list(rp.LESION_FEATURES)


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A tiny synthetic cohort (training centres + the sagittal external centre) and its features."""
    folder = generate_synthetic_dataset(tmp_path_factory.mktemp("peer"), n_train=24, n_test=8, size="tiny",
                                        seed=3, num_processes=1, progress=False)
    train = rp.extract_dataset_features(folder, "Tr", progress=False)
    test = rp.extract_dataset_features(folder, "Ts", progress=False)
    return folder, load_truth(folder), train, test


def _phantom(lesions: list[dict], seed: int = 0, flair: bool = True) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """An ellipsoidal head (a grey/white matter pattern) with a central ventricle (dark on T1c and FLAIR), lesions
    as spheres: enhancing 1.65 x (1 - 0.35 h) x (1 + 0.9 h x smooth noise), an optional necrotic core
    (``core`` = its radius over the lesion's, T1c 0.3). 2 mm voxels, scanner scale and offset, noise.
    ``lesions``: dicts with ``centre`` (x, y, z mm), ``radius`` mm, ``h``, ``core``."""
    rng = np.random.default_rng(seed)
    shape, spacing = (56, 64, 60), 2.0
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing for n in shape], indexing="ij")
    head = (x / 52) ** 2 + (y / 58) ** 2 + (z / 50) ** 2 <= 1
    ventricle = (x / 6) ** 2 + (y / 16) ** 2 + (z / 8) ** 2 <= 1
    grey = 1 / (1 + np.exp(-6 * ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) / 0.05))  # grey/white pattern
    t1c = np.where(head, 1.0 - 0.28 * grey, 0.0)
    fl = np.where(head, 0.7 + 0.22 * grey, 0.0)
    t1c[ventricle], fl[ventricle] = 0.22, 0.07
    mask = np.zeros(shape, bool)
    for lesion in lesions:
        cx, cy, cz = lesion["centre"]
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / lesion["radius"]
        inside = r <= 1
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
        noise /= noise[inside].std()
        h = lesion["h"]
        enhancing = 1.65 * (1 - 0.35 * h) * np.maximum(1 + 0.9 * h * noise, 0.15)
        core = inside & (r <= lesion.get("core", 0.0))
        t1c[inside] = enhancing[inside]
        t1c[core] = 0.3
        fl[inside] = 0.95
        fl[core] = 1.05
        fl[(r > 1) & (r <= 1.6) & head & ~ventricle] += 0.5  # oedema
        mask |= inside
    images = []
    for channel, scale, offset in ((t1c, 400.0, 10.0), (fl, 300.0, 0.0)):
        noisy = np.sqrt((channel + 0.02 * rng.standard_normal(shape)) ** 2 + (0.02 * rng.standard_normal(shape)) ** 2)
        images.append(np.round(noisy * scale + offset).astype(np.float32))
    images = np.stack(images if flair else images[:1])
    origin = tuple(float(-(n - 1) / 2 * spacing) for n in reversed(shape))
    geometry = Geometry(shape, (spacing,) * 3, origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return images, mask, geometry


def _ring(n: int, radius_mm: float = 30.0, z_mm: float = 18.0) -> list[tuple[float, float, float]]:
    angles = 2 * np.pi * np.arange(n) / n
    return [(float(radius_mm * np.cos(a)), float(radius_mm * np.sin(a)), z_mm) for a in angles]


# ----------------------------------------------------------------------------------- lesion features


def test_volumes_and_centroids_match_the_truth_file(cohort):
    folder, truth, train, test = cohort
    lesions = pd.concat([train, test], ignore_index=True)
    assert sorted(train.attrs["case_ids"] + test.attrs["case_ids"]) == sorted(truth["cases"])
    checked = 0
    for case_id, case in truth["cases"].items():
        rows = lesions[lesions.case_id == case_id].sort_values("lesion_label")
        assert len(rows) == case["n_lesions"], case_id
        voxel_volume = float(np.prod(case["geometry"]["spacing"]))
        for lesion, (_, row) in zip(case["lesions"], rows.iterrows()):
            assert row.lesion_label == lesion["lesion_index"]
            # NIfTI stores the spacing as float32
            assert row.volume_mm3 == pytest.approx(lesion["n_voxels"] * voxel_volume, rel=1e-6)
            np.testing.assert_allclose(row[list(rp.POSITION_COLUMNS)].to_numpy(float), lesion["centroid_world_mm"],
                                       atol=1e-3)
            checked += 1
    assert checked > 40
    assert not lesions[["volume_mm3", "log_volume", "csf_distance_mm", "relative_z", "posterior_fossa"]].isna().any().any()


def test_posterior_fossa_position_agrees_with_the_truth(cohort):
    _, truth, train, test = cohort
    lesions = pd.concat([train, test], ignore_index=True)
    flags = np.array([l["posterior_fossa"] for c in lesions.case_id.unique() for l in truth["cases"][c]["lesions"]])
    assert 3 <= flags.sum() < len(flags)  # both kinds present
    assert np.mean(lesions.posterior_fossa.to_numpy() == flags) >= 0.9
    assert lesions.relative_z[flags].max() < lesions.relative_z[~flags].median()


def test_necrotic_cores_are_measured_as_necrosis():
    centres = _ring(8)
    lesions = [dict(centre=c, radius=8.0, h=0.2, core=0.6 if i % 2 == 0 else 0.0) for i, c in enumerate(centres)]
    images, mask, geometry = _phantom(lesions, seed=1)
    frame = rp.lesion_features(images, mask, geometry, "phantom", {"0": "T1c", "1": "FLAIR"})
    assert len(frame) == 8
    order = [_nearest(frame, c) for c in centres]
    cored = frame.loc[order[0::2]]
    solid = frame.loc[order[1::2]]
    assert cored.necrotic_fraction.min() > solid.necrotic_fraction.max()
    assert cored.necrotic_fraction.mean() > solid.necrotic_fraction.mean() + 0.2
    assert cored.dark_fraction.min() > solid.dark_fraction.max() + 0.3
    assert cored.core_rim_difference.max() < solid.core_rim_difference.min()


def test_texture_features_follow_heterogeneity():
    centres = _ring(8)
    h = np.array([0.0, 0.6, 0.15, 0.9, 0.3, 1.0, 0.45, 0.75])  # not ordered around the ring
    images, mask, geometry = _phantom([dict(centre=c, radius=7.0, h=v) for c, v in zip(centres, h)], seed=2)
    frame = rp.lesion_features(images, mask, geometry, "phantom")
    frame = frame.loc[[_nearest(frame, c) for c in centres]]
    for feature in ("relative_cv", "enhancement_std", "neighbour_contrast"):
        assert spearmanr(frame[feature], h)[0] > 0.8, feature
    assert spearmanr(frame.enhancement_p10, h)[0] < -0.8


def test_necrosis_and_texture_track_the_synthetic_truth(cohort):
    _, truth, train, test = cohort
    lesions = pd.concat([train, test], ignore_index=True)
    records = [l for c in lesions.case_id.unique() for l in truth["cases"][c]["lesions"]]
    h = np.array([l["heterogeneity"] for l in records])
    necrotic = np.array([l["necrosis"] for l in records])
    # lesions of a few 4-mm voxels: necrosis and texture are only measurable in the larger ones
    resolved = np.array([l["diameter_mm"] for l in records]) >= 10.0
    assert resolved.sum() >= 15 and 3 <= necrotic[resolved].sum() < resolved.sum()
    fraction = lesions.necrotic_fraction.to_numpy()[resolved]
    assert fraction[necrotic[resolved]].mean() > fraction[~necrotic[resolved]].mean() + 0.1
    assert spearmanr(lesions.relative_cv[resolved], h[resolved])[0] > 0.3
    assert spearmanr(lesions.enhancement_std[resolved], h[resolved])[0] > 0.3


def test_csf_distance_and_oedema_see_the_phantom():
    lesions = [dict(centre=(11.0, 0.0, 0.0), radius=5.0, h=0.2),  # touching the ventricle
               dict(centre=(0.0, -38.0, 18.0), radius=6.0, h=0.2)]
    images, mask, geometry = _phantom(lesions, seed=3)
    frame = rp.lesion_features(images, mask, geometry, "phantom")
    near, far = frame.loc[_nearest(frame, lesions[0]["centre"])], frame.loc[_nearest(frame, lesions[1]["centre"])]
    assert near.csf_distance_mm <= 4.0 and near.csf_adjacent == 1.0
    assert far.csf_distance_mm > 15.0 and far.csf_adjacent == 0.0
    assert near.ventricle_distance_mm < far.ventricle_distance_mm
    assert (frame.oedema_flair_0_5 > frame.oedema_flair_5_10).all()
    assert (frame.oedema_volume_0_5_mm3 > 0).all()


def test_features_do_not_depend_on_the_stored_orientation():
    lesions = [dict(centre=c, radius=r, h=0.5, core=0.5 if r > 7 else 0.0) for c, r in zip(_ring(4), (5.0, 8.0, 6.0, 9.0))]
    images, mask, geometry = _phantom(lesions, seed=4)
    reference = rp.lesion_features(images, mask, geometry, "phantom")
    shape, origin, s = geometry.shape, np.asarray(geometry.origin), geometry.spacing
    # axial stored in RAS order: x and y flipped
    ras = Geometry(shape, s, tuple(origin + [s[0] * (shape[2] - 1), s[1] * (shape[1] - 1), 0.0]),
                   (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    # permuted: image x = world y, image y = world z, image z = world x
    permuted = Geometry((shape[2], shape[0], shape[1]), (s[1], s[2], s[0]), geometry.origin,
                        (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    for stored_images, stored_mask, stored in (
        (images[:, :, ::-1, ::-1], mask[:, ::-1, ::-1], ras),
        (images.transpose(0, 3, 1, 2), mask.transpose(2, 0, 1), permuted),
    ):
        frame = rp.lesion_features(np.ascontiguousarray(stored_images), np.ascontiguousarray(stored_mask), stored,
                                   "phantom")
        matched = frame.loc[[_nearest(frame, row[list(rp.POSITION_COLUMNS)]) for _, row in reference.iterrows()]]
        np.testing.assert_allclose(matched[list(rp.POSITION_COLUMNS) + FEATURES].to_numpy(float),
                                   reference[list(rp.POSITION_COLUMNS) + FEATURES].to_numpy(float), rtol=1e-6, atol=1e-6)


def test_without_flair_the_oedema_features_are_missing():
    lesions = [dict(centre=c, radius=6.0, h=0.4) for c in _ring(3)]
    images, mask, geometry = _phantom(lesions, seed=5, flair=False)
    frame = rp.lesion_features(images, mask, geometry, "phantom", {"0": "T1 post-contrast"})
    oedema = ["flair_mean", "oedema_flair_0_5", "oedema_flair_5_10", "oedema_volume_0_5_mm3",
              "oedema_volume_5_10_mm3", "oedema_fraction_0_5"]
    assert frame[oedema].isna().all().all()
    assert not frame[[f for f in FEATURES if f not in oedema]].isna().any().any()
    patients = rp.patient_features(frame, ["phantom"])
    assert not patients.isna().any().any()
    assert patients.loc["phantom", "max_oedema_volume_0_5_mm3"] == 0.0


def test_a_case_without_lesions_has_no_rows():
    images, mask, geometry = _phantom([], seed=6)
    frame = rp.lesion_features(images, mask, geometry, "empty")
    assert len(frame) == 0 and list(frame.columns) == rp.LESION_FRAME_COLUMNS


@pytest.mark.parametrize("names, t1c, flair", [
    ({"0": "T1c", "1": "FLAIR"}, 0, 1),
    ({"0": "FLAIR", "1": "T1-post"}, 1, 0),
    ({"0": "T2", "1": "T1 CE", "2": "t2_flair"}, 1, 2),
    ({"0": "T1n", "1": "T1Gd"}, 1, None),
    ({"0": "T2", "1": "PD"}, 0, None),
])
def test_channel_roles_come_from_the_channel_names(names, t1c, flair):
    assert rp.t1c_channel(names) == t1c
    assert rp.flair_channel(names) == flair


def test_shape_numerics():
    z, y, x = np.meshgrid(*[np.arange(-20, 21)] * 3, indexing="ij")
    ellipsoid = (x / 16.0) ** 2 + (y / 10.0) ** 2 + (z / 8.0) ** 2 <= 1
    major, elongation, flatness, fill = rp.covariance_shape(np.argwhere(ellipsoid), (1.0, 1.0, 1.0))
    assert major == pytest.approx(32.0, rel=0.03)
    assert elongation == pytest.approx(10 / 16, rel=0.03) and flatness == pytest.approx(8 / 16, rel=0.03)
    assert fill == pytest.approx(1.0, abs=0.03)
    sphere = x**2 + y**2 + z**2 <= 15**2
    cube = (abs(x) <= 12) & (abs(y) <= 12) & (abs(z) <= 12)
    needle = (x / 18.0) ** 2 + (y / 4.0) ** 2 + (z / 4.0) ** 2 <= 1
    sphericity = [rp.mesh_sphericity(m, (1.0, 1.0, 1.0)) for m in (sphere, cube, needle)]
    assert sphericity[0] == pytest.approx(1.0, abs=0.1)
    assert sphericity[1] == pytest.approx((np.pi / 6) ** (1 / 3), abs=0.05)  # a cube: 0.806
    assert sphericity[0] > sphericity[1] > sphericity[2]
    assert rp.histogram_entropy(np.array([0.1, 0.1, 0.6, 0.6])) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- a whole dataset


def test_dataset_extraction_in_parallel_equals_serial(cohort):
    folder, _, _, test = cohort
    parallel = rp.extract_dataset_features(folder, "Ts", num_processes=2, progress=False)
    pd.testing.assert_frame_equal(parallel, test)


def test_other_datasets_and_errors_name_the_case_and_file(handmade_dataset):
    # three channels (T1c, T1n, FLAIR), two lesion labels, an oblique grid of 12 x 14 x 16 voxels
    frame = rp.extract_dataset_features(handmade_dataset, "Tr", progress=False)
    assert set(frame.case_id) <= set(CASES_TR) and len(frame) > 0
    label = RawDataset(handmade_dataset).label_file(CASES_TR[1])
    label.write_bytes(label.read_bytes()[:-40])
    with pytest.raises(DatasetError) as info:
        rp.extract_dataset_features(handmade_dataset, "Tr", progress=False)
    assert CASES_TR[1] in str(info.value) and str(label) in str(info.value)


# ----------------------------------------------------------------------------------- patient level


def test_patient_features_aggregate_and_fill_cases_without_lesions():
    lesions = pd.DataFrame([
        dict(case_id="a", volume_mm3=100.0, necrotic_fraction=0.1, csf_distance_mm=5.0, posterior_fossa=0.0),
        dict(case_id="a", volume_mm3=300.0, necrotic_fraction=0.5, csf_distance_mm=2.0, posterior_fossa=1.0),
        dict(case_id="b", volume_mm3=50.0, necrotic_fraction=np.nan, csf_distance_mm=9.0, posterior_fossa=0.0),
        dict(case_id="elsewhere", volume_mm3=1e5, necrotic_fraction=1.0, csf_distance_mm=0.0, posterior_fossa=1.0),
    ]).reindex(columns=rp.LESION_FRAME_COLUMNS)
    out = rp.patient_features(lesions, ["c", "b", "a"])
    assert list(out.index) == ["c", "b", "a"]
    assert not out.isna().any().any()
    assert out.n_lesions.tolist() == [0, 1, 2]
    assert out.log_n_lesions.tolist() == pytest.approx(np.log1p([0, 1, 2]).tolist())
    assert out.total_volume_mm3.tolist() == [0.0, 50.0, 400.0]
    assert out.loc["a", "max_necrotic_fraction"] == 0.5 and out.loc["a", "mean_necrotic_fraction"] == 0.3
    assert out.loc["a", "vw_necrotic_fraction"] == pytest.approx((100 * 0.1 + 300 * 0.5) / 400)
    assert out.loc["a", "min_csf_distance_mm"] == 2.0 and out.loc["a", "sum_posterior_fossa"] == 1.0
    assert out.loc["b", "max_necrotic_fraction"] == rp.LESION_FEATURES["necrotic_fraction"]
    assert out.loc["c", "min_csf_distance_mm"] == rp.CSF_DISTANCE_CAP_MM
    assert out.loc["c", "has_lesions"] == 0.0 and out.loc["a", "has_lesions"] == 1.0


def test_clinical_design_matrix_encodes_the_declared_variables(handmade_dataset):
    spec = load_dataset_json(handmade_dataset)
    train = RawDataset(handmade_dataset).clinical_table("Tr")
    design = rp.clinical_design_matrix(train, spec)
    assert list(design.columns) == ["age", "age_missing", "prior_resection", "prior_resection_missing",
                                    "sex=F", "sex=M", "sex=missing_or_unseen"]
    assert design.loc[CASES_TR[1], "age_missing"] == 1.0 and np.isnan(design.loc[CASES_TR[1], "age"])
    assert design.loc[CASES_TR[2], "sex=missing_or_unseen"] == 1.0
    assert design[["sex=F", "sex=M", "sex=missing_or_unseen"]].sum(axis=1).tolist() == [1.0] * 4
    unseen = train.iloc[:1].assign(sex="X")
    assert rp.clinical_design_matrix(unseen, spec, reference=train)["sex=missing_or_unseen"].iloc[0] == 1.0


# ----------------------------------------------------------------------------------- models


def _simulate_noisy_or(n: int, seed: int, w=(1.0, -0.7, 0.5), b=-2.5, c=(0.8,), b0=-2.5):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n)
    case_ids = [f"p{i:04d}" for i in range(n)]
    lesion_case = np.repeat(np.arange(n), counts)
    x = rng.normal(size=(len(lesion_case), len(w)))
    z = rng.normal(size=(n, len(c)))
    p_lesion = 1 / (1 + np.exp(-(x @ np.asarray(w) + b)))
    p_patient = 1 / (1 + np.exp(-(z @ np.asarray(c) + b0)))
    survive = np.exp(np.bincount(lesion_case, np.log1p(-p_lesion), n)) * (1 - p_patient)
    y = (rng.random(n) < 1 - survive).astype(float)
    lesions = pd.DataFrame(x, columns=[f"f{j}" for j in range(len(w))])
    lesions.insert(0, "case_id", [case_ids[i] for i in lesion_case])
    clinical = pd.DataFrame(z, index=case_ids, columns=[f"z{j}" for j in range(len(c))])
    return lesions, case_ids, y, clinical


def test_noisy_or_recovers_known_coefficients_and_equals_brute_force():
    lesions, case_ids, y, clinical = _simulate_noisy_or(2000, seed=0)
    model = rp.NoisyOrLesionModel(l2=1e-3, feature_columns=["f0", "f1", "f2"], lesion_shift=False)
    model.fit(lesions, case_ids, y, clinical)
    np.testing.assert_allclose(model.coef_, [1.0, -0.7, 0.5], atol=0.2)
    assert model.intercept_ == pytest.approx(-2.5, abs=0.35)
    np.testing.assert_allclose(model.clinical_coef_, [0.8], atol=0.35)

    new_lesions, new_ids, _, new_clinical = _simulate_noisy_or(50, seed=1)
    predicted = model.predict_proba(new_lesions, new_ids, new_clinical)
    for i, case in enumerate(new_ids):
        rows = new_lesions[new_lesions.case_id == case][["f0", "f1", "f2"]].to_numpy()
        survive = 1.0 - 1.0 / (1.0 + np.exp(-(model.clinical_coef_ @ new_clinical.loc[case].to_numpy()
                                               + model.clinical_intercept_)))
        for x in rows:
            survive *= 1.0 - 1.0 / (1.0 + np.exp(-(model.coef_ @ x + model.intercept_)))
        assert predicted[i] == pytest.approx(1.0 - survive, rel=1e-9, abs=1e-12)


def test_noisy_or_is_invariant_to_lesion_order_and_handles_cases_without_lesions():
    lesions, case_ids, y, clinical = _simulate_noisy_or(300, seed=2)
    model = rp.NoisyOrLesionModel(feature_columns=["f0", "f1", "f2"], cv=3, seed=0).fit(lesions, case_ids, y, clinical)
    assert model.l2_ in model.l2 and len(model.cv_log_loss_) == len(model.l2)
    predicted = model.predict_proba(lesions, case_ids, clinical)
    shuffled = lesions.sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(model.predict_proba(shuffled, case_ids, clinical), predicted, rtol=1e-12)
    reversed_ids = case_ids[::-1]
    np.testing.assert_allclose(model.predict_proba(lesions, reversed_ids, clinical), predicted[::-1], rtol=1e-12)
    # a case without lesions: only the patient term (and it still depends on the covariates)
    none = model.predict_proba(lesions.iloc[:0], case_ids[:2], clinical)
    assert np.all((none > 0) & (none < predicted[:2]))
    # the same seed gives the same fit
    again = rp.NoisyOrLesionModel(feature_columns=["f0", "f1", "f2"], cv=3, seed=0).fit(lesions, case_ids, y, clinical)
    np.testing.assert_array_equal(again.params_, model.params_)


def test_noisy_or_gradient_and_log_space_numerics():
    lesions, case_ids, y, clinical = _simulate_noisy_or(40, seed=3)
    lesion_case = lesions.case_id.map({c: i for i, c in enumerate(case_ids)}).to_numpy()
    x, z = lesions[["f0", "f1", "f2"]].to_numpy(), clinical.to_numpy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        params = rng.normal(size=6) + np.array([0, 0, 0, -2, 0, -2])
        error = optimize.check_grad(lambda p: rp.noisy_or_objective(p, x, lesion_case, z, y, 0.5)[0],
                                    lambda p: rp.noisy_or_objective(p, x, lesion_case, z, y, 0.5)[1], params)
        assert error < 1e-4 * max(1.0, np.linalg.norm(rp.noisy_or_objective(params, x, lesion_case, z, y, 0.5)[1]))
    s = np.array([-1e-20, -1e-5, -0.3, -0.7, -5.0, -800.0])
    expected = np.array([np.log(1e-20), np.log(-np.expm1(-1e-5)), np.log(1 - np.exp(-0.3)), np.log(1 - np.exp(-0.7)),
                         np.log1p(-np.exp(-5.0)), 0.0])
    np.testing.assert_allclose(rp.log1mexp(s), expected, rtol=1e-12, atol=1e-300)


def _simulate_patients(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"x{j}" for j in range(6)])
    return x, 1.2 * x.x0.to_numpy() - 0.8 * x.x1.to_numpy()


def test_radiomics_logistic_learns_is_deterministic_and_robust_to_missing_values():
    from sklearn.metrics import roc_auc_score

    x, lp = _simulate_patients(400, seed=0)
    y = (np.random.default_rng(1).random(400) < 1 / (1 + np.exp(-lp))).astype(float)
    y[:10] = np.nan  # unknown outcomes are left out
    x.iloc[20:40, 2] = np.nan
    model = rp.RadiomicsLogistic(seed=0).fit(x.iloc[:300], y[:300])
    assert model.C_ in model.Cs
    p = model.predict_proba(x.iloc[300:])
    assert np.isfinite(p).all() and roc_auc_score(y[300:], p) > 0.75
    np.testing.assert_array_equal(rp.RadiomicsLogistic(seed=0).fit(x.iloc[:300], y[:300]).predict_proba(x.iloc[300:]), p)
    np.testing.assert_allclose(model.predict_proba(x.iloc[300:, ::-1]), p)  # columns by name
    assert set(model.coefficients.index[:2]) == {"x0", "x1"}
    with pytest.raises(ValueError, match="both classes"):
        rp.RadiomicsLogistic().fit(x, np.zeros(len(x)))


def test_radiomics_cox_ranks_survival():
    from sksurv.metrics import concordance_index_censored

    x, lp = _simulate_patients(300, seed=2)
    rng = np.random.default_rng(3)
    time = rng.exponential(12.0 * np.exp(-lp))
    censor = rng.uniform(2.0, 40.0, len(time))
    event, time = (time <= censor).astype(float), np.minimum(time, censor)
    model = rp.RadiomicsCox(seed=0).fit(x.iloc[:200], time[:200], event[:200])
    assert model.alpha_ in model.alphas and len(model.cv_scores_) == len(model.alphas)
    risk = model.predict(x.iloc[200:])
    assert concordance_index_censored(event[200:].astype(bool), time[200:], risk)[0] > 0.7


def test_the_peer_end_to_end(cohort):
    folder, _, train, test = cohort
    dataset = RawDataset(folder)
    spec = dataset.spec
    train_table, test_table = dataset.clinical_table("Tr"), dataset.clinical_table("Ts")
    train_ids, test_ids = list(train_table.index), list(test_table.index)
    # as benchmarks/accuracy.py calls it: the plans' endpoints and case_targets-style arrays
    endpoints = [{"name": n, "type": e.type} for n, e in spec.endpoints.items()]
    targets = {n: train_table[n].to_numpy(float) for n in spec.binary_endpoints}
    targets.update(os_time=train_table.os_months.to_numpy(float), os_event=train_table.os_event.to_numpy(float))
    peer = rp.RadiomicsPeer.fit(train, train_ids, train_table, spec, endpoints, targets, seed=0)
    rows = peer.predict(test, test_ids, test_table)
    linear, noisy_or = rows[rp.RadiomicsPeer.LOGISTIC_ROW], rows[rp.RadiomicsPeer.NOISY_OR_ROW]
    assert set(linear) == set(spec.endpoints) and set(noisy_or) == set(spec.binary_endpoints)
    assert set(peer.feature_sets_) == set(spec.endpoints) and set(peer.feature_sets_.values()) <= set(rp.FEATURE_SETS)
    for name in spec.binary_endpoints:
        for scores in (linear[name], noisy_or[name]):
            assert scores.shape == (len(test_ids),) and np.all((scores > 0) & (scores < 1))
    assert np.isfinite(linear["os"]).all() and np.std(linear["os"]) > 0

    frame = rp.fit_and_predict_peer(train, train_table, test, test_table, spec, seed=0,
                                    endpoints=["local_failure", "os"])
    assert list(frame.columns) == ["case_id", "local_failure", "local_failure_noisy_or", "os_risk"]
    assert frame.case_id.tolist() == test_ids
    np.testing.assert_allclose(frame.local_failure, linear["local_failure"])
    np.testing.assert_allclose(frame.local_failure_noisy_or, noisy_or["local_failure"])
    np.testing.assert_allclose(frame.os_risk, linear["os"])


def _nearest(frame: pd.DataFrame, point) -> int:
    """Index of the lesion row whose centroid is nearest to ``point`` (x, y, z mm)."""
    centroids = frame[list(rp.POSITION_COLUMNS)].to_numpy(float)
    return int(frame.index[np.argmin(np.linalg.norm(centroids - np.asarray(point, float), axis=1))])
