from setuptools import find_packages, setup

package_name = "pi0_client"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    python_requires=">=3.10",
    # Deliberately small: the robot PC installs this without torch or the model.
    install_requires=["numpy", "msgpack>=1.0", "websockets>=15"],
    zip_safe=True,
    maintainer="pi0_ros maintainers",
    maintainer_email="maintainers@pi0-ros.dev",
    description="Dependency-light pi0 policy client: inference types and openpi's websocket policy protocol.",
    license="Apache-2.0",
)
