"""User-facing errors: the CLI prints them as one line (no traceback) and exits non-zero."""


class CnnlabError(Exception):
    """An error the user can fix; the message says what to do next."""


class ImageError(CnnlabError):
    """An image that cannot be used, with the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsUnavailableError(CnnlabError):
    """Pretrained weights are neither cached locally nor downloadable."""


class WeightsIntegrityError(WeightsUnavailableError):
    """A weights file whose SHA-256 does not match, or that is not a plain file of tensors."""
