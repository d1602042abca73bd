"""Packaging for glmil_auto: self-configuring outcome prediction from medical images."""
from setuptools import find_packages, setup

setup(
    name="glmil_auto",
    version="0.1.0",
    description=(
        "Self-configuring GL-MIL MoE (global-to-local multiple-instance-learning mixture of "
        "experts) for outcome prediction from medical images, in the style of nnU-Net."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["glmil_auto", "glmil_auto.*"]),
    install_requires=[
        # torch is deliberately a range: on a CPU-only machine install the CPU build first
        # (the Makefile does), a satisfied range then installs nothing more.
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        # SimpleITK zero-fills truncated NIfTI files and turns NaN/inf into 0 when reading;
        # nibabel reads the stored bytes exactly, so the integrity checks use it.
        "nibabel>=4.0",
        "pandas>=1.5",
        "scikit-learn>=1.2",
        "scikit-survival>=0.22",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "blosc2>=2.5",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        # the radiomics peer (glmil_auto/evaluation/radiomics_peer/): marching-cubes surfaces for
        # sphericity, and one BLAS thread while its small models are fitted
        "scikit-image>=0.20",
        "threadpoolctl>=3.0",
        # clinical evaluation (glmil_evaluate, documentation/evaluation.md): regression tables with
        # p-values (statsmodels: logistic; lifelines: Cox), decision curves as dcurves defines them
        "statsmodels>=0.14",
        "lifelines>=0.27",
        "firthmodels>=0.8",  # Firth-penalised logistic / Cox fits where the multivariable models separate
        "dcurves>=1.1",
        # the HTML report (jinja2 autoescapes every user string) and cropping its PNG rendering
        "jinja2>=3.0",
        "pillow>=9.0",
        # SHAP (glmil_predict --explain, the report's summary plots): exact Shapley values of the
        # fusion over grouped features, and the beeswarm plot clinicians know from the literature
        "shap>=0.45",
        # dataset conversion (documentation/dicom_conversion.md): DICOM MR series, RTSTRUCT, RTPLAN
        # and RTDOSE headers and pixels; pandas reads the Brain-TR-GammaKnife .xlsx tables with openpyxl
        "pydicom>=2.4",
        "openpyxl>=3.1",
        # IBSI radiomics per lesion (glmil_auto/preprocessing/lesion_features/ibsi.py). 2.5.x because
        # mirp >= 2.6 requires pandas >= 3 (the project is on pandas 2); ibsi.py uses mirp internals
        # checked against its public extract_features by tests/test_ibsi_features.py. Pulls itk (~1.5 GB).
        "mirp==2.5.*",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "lifelines>=0.27"],
    },
    entry_points={
        "console_scripts": [
            "glmil_verify_dataset=glmil_auto.dataset.entry_points:verify_dataset_entry",
            "glmil_generate_synthetic=glmil_auto.synthetic.entry_points:generate_synthetic_entry",
            "glmil_extract_fingerprint=glmil_auto.experiment_planning.fingerprint.entry_points:extract_fingerprint_entry",
            "glmil_plan_experiment=glmil_auto.experiment_planning.plan_entry_points:plan_experiment_entry",
            "glmil_preprocess=glmil_auto.preprocessing.entry_points:preprocess_entry",
            "glmil_plan_and_preprocess=glmil_auto.preprocessing.entry_points:plan_and_preprocess_entry",
            "glmil_train=glmil_auto.training.entry_points:train_entry",
            "glmil_pretrain=glmil_auto.pretraining.entry_points:pretrain_entry",
            "glmil_predict=glmil_auto.inference.entry_points:predict_entry",
            "glmil_predict_from_modelfolder=glmil_auto.inference.entry_points:predict_from_modelfolder_entry",
            "glmil_recalibrate=glmil_auto.inference.recalibrate_command:recalibrate_entry",
            "glmil_evaluate_predictions=glmil_auto.evaluation.entry_points:evaluate_predictions_entry",
            "glmil_evaluate=glmil_auto.evaluation.evaluate_command:evaluate_entry",
            "glmil_convert_dicom_rt=glmil_auto.dataset_conversion.dicom_rt_entry:convert_dicom_rt_entry",
            "glmil_convert_folder=glmil_auto.dataset_conversion.folder_entry:convert_folder_entry",
        ],
    },
)
