"""The serving Dockerfile holds the promises the issue makes (hadolint and the running image:
tests/docker/)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "serving.Dockerfile"


def test_image_promises() -> None:
    text = DOCKERFILE.read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert final_stage.startswith("python:3.11-slim")
    assert "USER 10001" in final_stage  # non-root
    assert "EXPOSE 8080" in final_stage
    assert "/v2/health/ready" in final_stage.split("HEALTHCHECK", 1)[1]
    assert 'CMD ["serve"]' in final_stage  # SageMaker runs `docker run IMAGE serve`
    # offline, and only the locked wheels (tests/docker/test_requirements.py checks the lock)
    assert "--no-index" in text and "--require-hashes" in text
    assert "requirements-serving.lock" in text
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert "scikit" not in "\n".join(instructions).lower()
