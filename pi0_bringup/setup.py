from glob import glob

from setuptools import find_packages, setup

package_name = "pi0_bringup"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config/robots", glob("config/robots/*.yaml")),
        ("share/" + package_name + "/config/params", glob("config/params/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="pi0_ros maintainers",
    maintainer_email="maintainers@pi0-ros.dev",
    description="Robot descriptions, launch files and simulation for pi0_ros.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_robot = pi0_bringup.sim_robot_node:main",
            "run = pi0_bringup.run:main",
            "demo = pi0_bringup.demo:main",
            "benchmark_runtime = pi0_bringup.benchmark.runtime:main",
        ],
    },
)
