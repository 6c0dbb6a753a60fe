"""zoo list / info / fetch: readme parsing, sha1 checks, atomic writes, offline use."""
import hashlib
import socket

import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.zoo import ChecksumError, fetch_weights, get_model, list_models, parse_front_matter


def _zoo(tmp_path, payload=b"weights of a tiny net", sha1=None, url="http://127.0.0.1:9/m.caffemodel"):
    """A zoo with one model 'tiny' whose readme records the sha1 of `payload` (a local file)."""
    source = tmp_path / "downloaded.caffemodel"
    source.write_bytes(payload)
    digest = sha1 if sha1 is not None else hashlib.sha1(payload).hexdigest()
    folder = tmp_path / "zoo" / "tiny"
    folder.mkdir(parents=True)
    (folder / "readme.md").write_text(
        "---\nname: Tiny test model\ncaffemodel: tiny.caffemodel\n"
        f"caffemodel_url: {url}\nsha1: {digest}\nlicense: unrestricted\n"
        "weights_from: this test\n---\n\nA model for tests.\n")
    return tmp_path / "zoo", source


def test_front_matter_parsing():
    meta, body = parse_front_matter("---\nname: 'X'\nsha1: " + "A" * 40 + "\nempty:\n---\ntext\n")
    assert meta == {"name": "X", "sha1": "a" * 40, "empty": None} and body.strip() == "text"
    with pytest.raises(ValueError, match="sha1 must be 40 hexadecimal"):
        parse_front_matter("---\nsha1: 1234\n---\n")
    with pytest.raises(ValueError, match="no closing"):
        parse_front_matter("---\nname: x\n")
    with pytest.raises(ValueError, match="starts with a '---'"):
        parse_front_matter("# just markdown\n")
    with pytest.raises(ValueError, match=":3: expected 'key: value'"):
        parse_front_matter("---\nname: x\n- a list item\n---\n")


def test_fetch_from_local_file_verifies_and_writes_atomically(tmp_path):
    root, source = _zoo(tmp_path)
    model = get_model("tiny", root)
    assert [m.name for m in list_models(root)] == ["tiny"]
    path = fetch_weights("tiny", source=source, root=root)
    assert path == model.weights_path and path.read_bytes() == source.read_bytes()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temporaries left
    # Already there and good: nothing to do, even without a source.
    assert fetch_weights("tiny", root=root) == path


def test_fetch_refuses_a_wrong_file_and_leaves_nothing(tmp_path):
    root, _ = _zoo(tmp_path)
    bad = tmp_path / "tampered.caffemodel"
    bad.write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="does not match"):
        fetch_weights("tiny", source=bad, root=root)
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["readme.md"]
    # A verified file already in place is kept: the bad source is not even read.
    good = fetch_weights("tiny", source=tmp_path / "downloaded.caffemodel", root=root)
    assert fetch_weights("tiny", source=bad, root=root) == good
    assert hashlib.sha1(good.read_bytes()).hexdigest() == get_model("tiny", root).sha1
    # A failed fetch over a file that is not the expected one leaves that file as it was.
    other = tmp_path / "other.caffemodel"
    other.write_bytes(b"old contents")
    with pytest.raises(ChecksumError):
        fetch_weights("tiny", source=bad, root=root, dest=other)
    assert other.read_bytes() == b"old contents"


def test_fetch_explains_when_there_is_no_network(tmp_path, monkeypatch):
    root, _ = _zoo(tmp_path)

    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(RuntimeError, match=r"cannot reach 127.0.0.1 .*no network access.*fetch tiny --from FILE"):
        fetch_weights("tiny", root=root, timeout=2)
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["readme.md"]


def test_fetch_needs_a_sha1_unless_told_otherwise(tmp_path):
    root, source = _zoo(tmp_path, sha1="")
    with pytest.raises(ValueError, match="records no sha1"):
        fetch_weights("tiny", source=source, root=root)
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    assert fetch_weights("tiny", source=source, root=root, sha1=digest).exists()
    caffemodel = tmp_path / "real.caffemodel"
    caffemodel.write_bytes(_tiny_caffemodel())
    other = fetch_weights("tiny", source=caffemodel, root=root, verify=False, dest=tmp_path / "copy.bin")
    assert other.read_bytes() == caffemodel.read_bytes()


def _tiny_caffemodel():
    from pycaffe_lite.proto import caffe_pb2
    net = caffe_pb2.NetParameter(name="tiny")
    layer = net.layer.add(name="ip", type="InnerProduct")
    layer.blobs.add().data.extend([1.0, 2.0])
    return net.SerializeToString()


@pytest.mark.parametrize("name", ["../../outside.caffemodel", "/tmp/absolute.caffemodel", "sub/dir.caffemodel",
                                  "!!python/object:os.system", "&anchor x.caffemodel", ".hidden", "..",
                                  "a\\b.caffemodel", "evil\x00.caffemodel"])
def test_a_readme_names_only_a_plain_file_inside_the_model_folder(tmp_path, name, capsys):
    root, source = _zoo(tmp_path)
    readme = root / "tiny" / "readme.md"
    readme.write_text(readme.read_text().replace("caffemodel: tiny.caffemodel", f"caffemodel: {name}"))
    with pytest.raises(ValueError, match="plain file name"):
        get_model("tiny", root)
    assert main(["zoo", "--root", str(root), "fetch", "tiny", "--from", str(source)]) == 2
    assert "plain file name" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["readme.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloaded.caffemodel", "zoo"]


def test_a_readme_file_url_is_refused_but_the_command_line_may_give_one(tmp_path):
    payload = b"weights of a tiny net"
    root, source = _zoo(tmp_path, payload=payload, url=(tmp_path / "downloaded.caffemodel").as_uri())
    with pytest.raises(ValueError, match="not an http"):
        fetch_weights("tiny", root=root)
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["readme.md"]
    assert fetch_weights("tiny", source=source.as_uri(), root=root).read_bytes() == payload


def test_no_verify_never_copies_a_file_that_is_not_a_caffemodel(tmp_path, capsys):
    root, _ = _zoo(tmp_path)
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot weights\n")
    for source in (str(secret), secret.as_uri()):
        assert main(["zoo", "--root", str(root), "fetch", "tiny", "--from", source, "--no-verify"]) == 2
        assert "not a .caffemodel" in capsys.readouterr().err
    empty_net = tmp_path / "empty.caffemodel"
    empty_net.write_bytes(b"")   # parses as an empty NetParameter: no weights in it
    with pytest.raises(ValueError, match="without weights"):
        fetch_weights("tiny", source=empty_net, root=root, verify=False)
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["readme.md"]
    good = tmp_path / "good.caffemodel"
    good.write_bytes(_tiny_caffemodel())
    assert fetch_weights("tiny", source=good, root=root, verify=False).read_bytes() == good.read_bytes()


def test_fetch_file_url(tmp_path):
    root, source = _zoo(tmp_path)
    assert fetch_weights("tiny", source=source.as_uri(), root=root).exists()


def test_cli_zoo(tmp_path, capsys):
    root, source = _zoo(tmp_path)
    assert main(["zoo", "--root", str(root), "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["zoo", "--root", str(root), "info", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "Tiny test model" in out and "absent" in out
    assert main(["zoo", "--root", str(root), "fetch", "tiny", "--from", str(source)]) == 0
    assert "sha1 " + hashlib.sha1(source.read_bytes()).hexdigest() in capsys.readouterr().out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"no")
    assert main(["zoo", "--root", str(root), "fetch", "tiny", "--from", str(bad),
                 "--to", str(tmp_path / "x.caffemodel")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (tmp_path / "x.caffemodel").exists()
    # A folder path works as a name (a readme anywhere).
    assert main(["zoo", "info", str(root / "tiny"), "--json"]) == 0
    assert '"weights_present": true' in capsys.readouterr().out


def test_repository_zoo_lists_every_model(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("bvlc_alexnet", "resnet50", "inception_v3", "squeezenet_v1.1", "mobilenet"):
        assert name in out
