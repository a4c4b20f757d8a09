from setuptools import find_packages, setup

setup(
    name="counteranimal",
    version="0.1.0",
    description="Build CounterAnimal-style benchmarks of CLIP's reliance on backgrounds",
    python_requires=">=3.11",
    packages=find_packages(include=["schemas*", "curation*", "pipeline*", "annotation*"]),
    package_data={"curation": ["data/*.csv", "data/*.json", "data/*.yaml", "model_configs/*.json",
                              "templates/*.j2"]},
    install_requires=[
        # torch==2.14.1 / torchvision==0.29.1 are installed first by the Makefile (see README); unpinned
        # here so that pre-installed CPU wheels satisfy them (open_clip_torch requires both anyway).
        "torch>=2.0",
        "torchvision",
        "apache-beam==2.77.0",
        "img2dataset>=1.47",
        "open_clip_torch>=3.3",
        "webdataset>=0.2,<0.3",
        "pyarrow>=17,<26",
        "pyyaml>=6",
        "pydantic>=2.6",
        "numpy",
        "pillow<13",
        "scipy>=1.11",
        "huggingface_hub>=0.23",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "jinja2>=3.1",
        "markupsafe>=2.1",
        "matplotlib>=3.8",
        "fsspec>=2023.1",      # curation/storage.py: a run directory given as a URL (s3fs/gcsfs: extras)
    ],
    extras_require={
        # datasets and mlcroissant: the release tests read a release with HF datasets and validate its Croissant
        # moto[server] and s3fs: tests/test_object_storage.py runs a real S3 server on 127.0.0.1 and puts RUN in it
        "test": ["pytest>=8", "pytest-timeout", "datasets>=3", "mlcroissant>=1.0", "moto[server]==5.2.5",
                 "s3fs>=2024.2"],
        "annotation": ["label-studio-sdk>=2.0", "httpx>=0.24"],
        # s3: RUN as s3://… (curation/storage.py over s3fs; Beam's own S3 file system for shards and download)
        "s3": ["s3fs>=2024.2", "apache-beam[aws]==2.77.0"],
        # cluster: Beam's Google Cloud and AWS file systems and runners (the worker image installs it);
        # s3fs / gcsfs for a run directory in s3:// or gs:// (gs:// is not tested here)
        "cluster": ["apache-beam[gcp,aws]==2.77.0", "s3fs>=2024.2", "gcsfs>=2024.2"],
    },
    entry_points={"console_scripts": ["counteranimal=pipeline.cli:main"]},
)
