"""Engine backends: torch eager (reference), optimised torch, onnxruntime, TensorRT."""
