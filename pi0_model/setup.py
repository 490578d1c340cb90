from setuptools import find_packages, setup

package_name = "pi0_model"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "pyyaml",
        "torch>=2.4",
        "transformers>=5.0",
        "safetensors",
        "sentencepiece",
    ],
    zip_safe=True,
    maintainer="pi0_ros maintainers",
    maintainer_email="maintainers@pi0-ros.dev",
    description="The pi0 vision-language-action flow-matching policy in PyTorch.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "pi0-benchmark = pi0_model.benchmark:main",
        ],
    },
)
