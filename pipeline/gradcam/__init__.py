"""vizpipe's grad-cam engine, shared by the stages that draw class activation maps.

``methods.py`` finds every CAM method the installed pytorch-grad-cam exports;
``layers.py`` resolves ``cam.layer`` (``auto``, names, globs) and hands the library the reshape of
channels-last and token layers; ``adapter.py`` runs one library CAM object per layer group
(the graph cut and clone hooks, frozen parameters); ``extended.py`` subclasses the library's CAM
classes (several classes from one forward pass, each layer's map from an averaged call);
``eigencam.py`` is EigenCAM on the model's device. The metrics that score the maps (grad-cam's
among them) are ``vizpipe.pipeline.metrics``.
"""
