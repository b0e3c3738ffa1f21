"""HTTP pieces every role serves: health and metrics, the error shape, the body reader, request metrics."""
