"""Export: merge adapters, convert to GGUF, quantize with llama.cpp, verify, write Modelfiles."""
