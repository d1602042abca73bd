"""Dataset001_SynthBrainMets: the built-in synthetic multi-centre brain-metastasis SRS cohort.

Nothing is downloaded: the cohort is generated. Same arguments as ``glmil_generate_synthetic``:

    python dataset_conversion/Dataset001_SynthBrainMets.py [-o RAW] [-ntr 120] [-nts 40] [-nc 4]
        [-s demo|small|tiny|full|FACTOR] [--seed 0] [-np 2] [--overwrite]

Output: ``RAW/Dataset001_SynthBrainMets/`` and ``RAW/Dataset001_SynthBrainMets_truth.json``;
RAW defaults to ``$glmil_raw``, else ``./glmil_data/raw``.
"""

from glmil_auto.synthetic.entry_points import generate_synthetic_entry

if __name__ == "__main__":
    generate_synthetic_entry()
