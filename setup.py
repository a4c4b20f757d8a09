from setuptools import find_packages, setup

setup(
    name="counteranimal",
    version="0.1.0",
    description="Build CounterAnimal-style benchmarks of CLIP's reliance on backgrounds",
    python_requires=">=3.11",
    packages=find_packages(include=["schemas*", "curation*", "pipeline*", "annotation*"]),
    package_data={"curation": ["data/*.csv", "data/*.json", "data/*.yaml", "model_configs/*.json"]},
    install_requires=[
        # torch==2.14.1 / torchvision==0.29.1 are installed first by the Makefile (see README).
        "apache-beam==2.77.0",
        "img2dataset>=1.47",
        "open_clip_torch>=3.3",
        "webdataset>=0.2,<0.3",
        "pyarrow>=17,<26",
        "pyyaml>=6",
        "pydantic>=2.6",
        "numpy",
        "pillow<13",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout"],
        "annotation": ["label-studio-sdk>=2.0"],
    },
    entry_points={"console_scripts": ["counteranimal=pipeline.cli:main"]},
)
