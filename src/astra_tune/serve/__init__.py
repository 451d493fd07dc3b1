"""`astra serve`: OpenAI- and Ollama-compatible HTTP APIs over llama.cpp and the registry."""
