"""Inference: one loaded stage model (stage_model), sliding window and device-side resampling,
and the cascade that runs the stages on a case. Submodules are imported explicitly so that
importing the package stays cheap (no torch until a model is used)."""
