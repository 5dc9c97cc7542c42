"""Image references: the distribution grammar, as docker and containerd read a reference."""

from __future__ import annotations

import pytest

from wizard.images import ReferenceError, parse


@pytest.mark.parametrize("ref,want", [
    ("ghcr.io/acme/app:v1", ("ghcr.io", "acme/app", "v1", None)),
    ("registry.test:5000/acme/app@sha256:" + "a" * 64, ("registry.test:5000", "acme/app", None, "sha256:" + "a" * 64)),
    ("nginx", ("docker.io", "library/nginx", None, None)),
    ("localhost/a/b:1.0", ("localhost", "a/b", "1.0", None)),
])
def test_reference_grammar(ref, want):
    r = parse(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == want


@pytest.mark.parametrize("ref,word", [("ghcr.io/Acme/app", "lowercase"), ("ghcr.io/acme/app:-x", "tag"),
                                      ("ghcr.io/acme/app@sha256:abc", "digest"), ("", "empty")])
def test_reference_grammar_refuses(ref, word):
    with pytest.raises(ReferenceError, match=word):
        parse(ref)
