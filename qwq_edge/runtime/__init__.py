"""The Python API's machinery: options, prompts, the generation loop, a loaded model, chats, sharing the model."""
