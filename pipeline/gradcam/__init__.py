"""vizpipe's grad-cam engine, shared by the stages that draw class activation maps.

``methods.py`` finds every CAM method and metric the installed pytorch-grad-cam exports;
``layers.py`` resolves ``cam.layer`` (``auto``, names, globs) and hands the library the reshape of
channels-last and token layers; ``adapter.py`` is the adapter around one library CAM object and
its patches (clone hooks, frozen parameters, several classes from one forward pass).
"""
