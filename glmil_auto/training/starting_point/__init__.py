"""Fitting the network's starting point on a fold: clinical and radiomics offsets, harmonisation, lesion models."""
