"""The scores of explanation maps, in one home: faithfulness, localisation, complexity, sanity.

``registry.py`` names every metric (``METRICS``: what it scores, which way is better, its paper,
one sentence for the report); ``perturbation.py`` holds RISE's deletion and insertion curves
(batched) and calls grad-cam's metrics (ROAD, confidence change, ARCC); ``localisation.py``
scores a map against the object's box or mask (pointing game, energy in box/mask, mask IoU);
``complexity.py`` its sparseness and entropy; ``scoring.py`` runs the configured metrics on a
batch of maps; ``sanity.py`` is Adebayo et al.'s randomisation checks (the maps of a model whose
layers are re-initialised from the top down, and of a model trained on random labels).
"""
