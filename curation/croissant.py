"""croissant.json: the release described in MLCommons Croissant 1.0, so dataset catalogs read it.

Distribution: every shard (a tar FileObject, with sha256), the images inside each split's shards (a
FileSet), metadata.parquet and the text files. Record sets: `photos` (one record per photo, from
metadata.parquet), `images` (the image files in the shards) and `classnames`.
"""
from __future__ import annotations

import json
from pathlib import Path

from curation import release_layout as layout, storage

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "samplingRate": "cr:samplingRate",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# metadata.parquet columns described as fields of the `photos` record set.
PHOTO_FIELDS = [
    ("uid", "sc:Text", "stable photo id"),
    ("key", "sc:Text", "the sample's key in its shard"),
    ("group", "sc:Text", "common or counter (the split)"),
    ("shard", "sc:Text", "the shard holding the photo"),
    ("class_idx", "sc:Integer", "index into classnames.txt"),
    ("class_name", "sc:Text", "class name"),
    ("background", "sc:Text", "the photo's background"),
    ("image_ext", "sc:Text", "image file extension"),
    ("sha256", "sc:Text", "SHA-256 of the image bytes"),
    ("url", "sc:URL", "where the photo was fetched from"),
    ("license", "sc:Text", "the photo's license"),
    ("attribution", "sc:Text", "the photo's attribution"),
    ("verified", "sc:Text", "human or model: who assigned the group"),
]

_MIME = {"jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}


def _file(rel: str, folder: Path, fmt: str, description: str, digests: dict[str, str]) -> dict:
    from curation.release import sha256_file

    p = folder / rel
    if rel not in digests:
        digests[rel] = sha256_file(p)
    return {"@type": "cr:FileObject", "@id": rel, "name": rel, "description": description, "contentUrl": rel,
            "contentSize": f"{p.stat().st_size} B", "encodingFormat": fmt, "sha256": digests[rel]}


def build(folder: str | Path, ctx: dict, digests: dict[str, str] | None = None) -> dict:
    """The Croissant document for the release folder (its shards and metadata already written).

    ``digests`` (relative path → sha256) is used and filled, so SHA256SUMS need not hash the files again."""
    folder = storage.path(folder)
    digests = {} if digests is None else digests
    exts = sorted({e for e in _column(folder, "image_ext")}) or ["jpg"]
    distribution = [
        _file(layout.METADATA, folder, "application/x-parquet", "one row per photo", digests),
        _file(layout.CLASSNAMES, folder, "text/plain", "the label space, one name per line", digests),
        _file(layout.TEMPLATES, folder, "text/plain", "zero-shot prompt templates with {c}", digests),
    ]
    for split in layout.SPLITS:
        shards = layout.shard_paths(folder, split)
        ids = [f"{split}/{p.name}" for p in shards]
        distribution += [_file(i, folder, "application/x-tar", f"{split} shard", digests) for i in ids]
        distribution.append({"@type": "cr:FileSet", "@id": f"{split}-images", "name": f"{split}-images",
                             "description": f"the {split} group's images inside its shards",
                             "containedIn": [{"@id": i} for i in ids],
                             "encodingFormat": _MIME.get(exts[0], "image/jpeg"),
                             "includes": [f"*.{e}" for e in exts]})
    photo_fields = [{"@type": "cr:Field", "@id": f"photos/{name}", "name": name, "description": desc,
                     "dataType": dtype,
                     "source": {"fileObject": {"@id": layout.METADATA}, "extract": {"column": name}}}
                    for name, dtype, desc in PHOTO_FIELDS]
    image_sets = [{"@type": "cr:RecordSet", "@id": f"{split}_images", "name": f"{split}_images",
                   "description": f"the {split} group's image files",
                   "field": [
                       {"@type": "cr:Field", "@id": f"{split}_images/image", "name": "image",
                        "description": "the photo", "dataType": "sc:ImageObject",
                        "source": {"fileSet": {"@id": f"{split}-images"}, "extract": {"fileProperty": "content"}}},
                       {"@type": "cr:Field", "@id": f"{split}_images/filename", "name": "filename",
                        "description": "KEY.ext: KEY is the photo's key in photos", "dataType": "sc:Text",
                        "source": {"fileSet": {"@id": f"{split}-images"}, "extract": {"fileProperty": "filename"}}},
                   ]} for split in layout.SPLITS]
    description = (f"CounterAnimal-style benchmark: {ctx['n_photos']} photos of {ctx['n_classes']} animal classes, "
                   "each in a common-background and a counter-background group. "
                   + ("Groups verified by people." if ctx["verified"]
                      else "UNVERIFIED: pairs and backgrounds are the model's, not checked by people."))
    licenses = [lic for lic, _ in ctx["licenses"] if lic] or ["not stated: see the source of the photos"]
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": ctx["release"],
        "description": description,
        "version": _semver(ctx["version"]),
        **({"datePublished": ctx["date"]} if ctx.get("date") else {}),
        "license": licenses if len(licenses) != 1 else licenses[0],
        "url": f"./{layout.CARD}",
        "citeAs": ("@article{wang2024sober, title={A Sober Look at the Robustness of CLIPs to Spurious Features}, "
                   "author={Wang, Qizhou and Lin, Yong and Chen, Yongqiang and Schmidt, Ludwig and Han, Bo and "
                   "Zhang, Tong}, year={2024}}"),
        "keywords": ["CounterAnimal", "spurious correlation", "CLIP", "zero-shot"],
        "distribution": distribution,
        "recordSet": [
            {"@type": "cr:RecordSet", "@id": "photos", "name": "photos",
             "description": "one record per photo", "key": {"@id": "photos/uid"}, "field": photo_fields},
            *image_sets,
            {"@type": "cr:RecordSet", "@id": "classnames", "name": "classnames",
             "description": "the label space; line i is class index i",
             "field": [{"@type": "cr:Field", "@id": "classnames/name", "name": "name", "dataType": "sc:Text",
                        "source": {"fileObject": {"@id": layout.CLASSNAMES}, "extract": {"fileProperty": "lines"}}}]},
        ],
    }


def _semver(version: str) -> str:
    """Croissant wants MAJOR.MINOR.PATCH: 1 → 1.0.0, 1.2 → 1.2.0; anything else as given."""
    parts = str(version).lstrip("v").split(".")
    if all(p.isdigit() for p in parts) and 1 <= len(parts) <= 3:
        return ".".join(parts + ["0"] * (3 - len(parts)))
    return str(version)


def _column(folder: Path, name: str) -> list:
    return storage.read_table(folder / layout.METADATA, columns=[name]).column(name).to_pylist()


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
