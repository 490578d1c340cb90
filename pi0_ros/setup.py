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
        "console_scripts": [
            "policy_node = pi0_ros.policy.node:main",
            "command_streamer = pi0_ros.streamer.node:main",
            "send_instruction = pi0_ros.tools.send_instruction:main",
            "bag_record = pi0_ros.bag.record:main",
            "bag_play = pi0_ros.bag.play:main",
            "bag_evaluate = pi0_ros.bag.evaluate:main",
            "pi0_serve = pi0_ros.serve.cli:main",
            "bag_to_dataset = pi0_ros.bag.to_dataset:main",
        ],
    },
)
