"""Pixel attributions beside the CAMs: captum's methods and the baselines, by name.

``methods.py`` names them (``cam.method=integrated_gradients``, ``saliency``, ... and ``sobel``),
checks their arguments (``cam.kwargs``) and resolves any ``cam.method`` (a CAM or an
attribution); ``runner.py`` runs one for the CAM stage with the interface of grad-cam's
``CamRunner`` and turns the attributions into maps.
"""
