"""maskq's HTTP front door (FastAPI): thin over maskq's job records and storage and the Celery task
sent by name. Never imports ONNX Runtime or TensorFlow. The app: ``api.main:app``."""
