"""Places files live in the tests, behind one interface: a local folder (on this disk or on another
filesystem), memory://, and a bucket on a real S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import os
import uuid

import fsspec

__all__ = ["Bucket", "Store", "s3_options"]


def s3_options(endpoint: str, key: str = "testing", secret: str = "testing") -> dict:
    """fsspec/s3fs options for moto's server."""
    return {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


class Bucket:
    """A fresh bucket; `fs` is a separate s3fs client (not dupflow's cached one), like another writer."""

    def __init__(self, endpoint: str, **creds):
        import s3fs

        self.options = s3_options(endpoint, **creds)
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        self.name = f"dupflow-{uuid.uuid4().hex[:12]}"
        self.fs.call_s3("create_bucket", Bucket=self.name)

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}".rstrip("/")

    def keys(self, prefix: str) -> dict[str, bytes]:
        """{key below prefix: bytes} of every object there, read afresh."""
        self.fs.invalidate_cache()
        base = f"{self.name}/{prefix}"
        found = self.fs.find(base) if self.fs.exists(base) else []
        return {path[len(base) + 1 :]: self.fs.cat_file(path) for path in found}


class Store:
    """A folder in one store: write files, read its tree, test a URL, as another client would."""

    def __init__(self, kind: str, fs: fsspec.AbstractFileSystem, base: str, prefix: str, options: dict):
        self.kind, self.fs, self.base, self.prefix, self.options = kind, fs, base.rstrip("/"), prefix, options

    @classmethod
    def local(cls, folder: str | os.PathLike, kind: str = "local") -> Store:
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        return cls(kind, fsspec.filesystem("file"), folder, "", {})

    @classmethod
    def memory(cls) -> Store:
        name = f"dupflow-{uuid.uuid4().hex[:12]}"
        return cls("memory", fsspec.filesystem("memory"), f"/{name}", "memory:/", {})

    @classmethod
    def s3(cls, bucket: Bucket) -> Store:
        return cls("s3", bucket.fs, bucket.name, "s3://", bucket.options)

    @property
    def is_local(self) -> bool:
        return self.kind != "memory" and self.kind != "s3"

    def url(self, relative: str = "") -> str:
        """What a user passes to dupflow for this place."""
        return f"{self.prefix}{self.base}/{relative}".rstrip("/")

    def _path(self, url: str) -> str:
        assert url.startswith(self.prefix + self.base), url
        return url[len(self.prefix) :]

    def put(self, relative: str, data: bytes) -> str:
        path = f"{self.base}/{relative}"
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, data)
        return self.url(relative)

    def tree(self, relative: str = "") -> dict[str, bytes]:
        """{path below the folder: bytes} of every file there, read afresh."""
        self.fs.invalidate_cache()
        base = f"{self.base}/{relative}".rstrip("/")
        if not self.fs.exists(base):
            return {}
        return {path[len(base) + 1 :]: self.fs.cat_file(path) for path in self.fs.find(base)}

    def exists(self, url: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(self._path(url))

    def cleanup(self) -> None:
        if self.kind == "memory":
            self.fs.rm(self.base, recursive=True)
