FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY consumers ./consumers
RUN pip install --no-cache-dir .
COPY config ./config
ENV ROUTER_CONFIG=/app/config/router.toml
EXPOSE 8080
CMD ["python", "-m", "router", "serve"]
