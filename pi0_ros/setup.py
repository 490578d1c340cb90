from setuptools import find_packages, setup

package_name = "pi0_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="pi0_ros maintainers",
    maintainer_email="maintainers@pi0-ros.dev",
    description="ROS 2 runtime for the pi0 policy.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [],
    },
)
