"""Rigid registration (SimpleITK) for a channel whose series has another frame of reference.

Series acquired in one session share a FrameOfReferenceUID and are aligned by their DICOM
geometry alone. A series from another session (or a scanner that issues a new frame of reference
per series) is not, and ``glmil_convert_dicom_rt --register`` aligns it to the reference with a
rigid (6 degrees of freedom) transform: Mattes mutual information (MR contrasts differ), a
centred initialiser on the image geometry, three resolution levels.
"""

from __future__ import annotations

import SimpleITK as sitk


def rigid_registration(reference: sitk.Image, moving: sitk.Image, seed: int = 0) -> sitk.Transform:
    """The transform mapping reference points to ``moving`` points (what ``sitk.Resample`` needs)."""
    fixed = sitk.Cast(reference, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200,
                                                    relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)
