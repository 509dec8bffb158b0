#!/bin/bash
# The seed blog's layer build script ("AWS Lambda Layers for Python", 2020), kept as written.
# Lines changed for the benchmark are marked "bench:"; nothing else differs:
#  - `pipenv lock --requirements` no longer exists (removed in pipenv 2022.8.13); its successor
#    `pipenv requirements` stands in for it, as the issue prescribes.
#  - The zip's name and the own packages come from SEED_NAME / SEED_VERSION / SEED_PACKAGES (the
#    blog hard-codes aws-emr-launcher, `python setup.py --version` and emrlauncher/; the fixtures
#    have no setup.py). Without them the script behaves exactly as the blog's.
#  - `pip3 install pipenv` is skipped when SEED_PIPENV_PREINSTALLED=1: the benchmark installs
#    pipenv once, untimed, into its own venv and puts it first on PATH.
# Like the original there is no `set -e`: a failed step does not stop the script. The benchmark
# checks the zip it leaves behind instead.

PACKAGE_NAME="${SEED_NAME:-aws-emr-launcher}-${SEED_VERSION:-$(python setup.py --version)}.zip"  # bench: names

function cleanup()  {
    # remove target folder
    rm -rf target
}

function install_dependencies() {
    mkdir target
    # install pipenv as it is used by the project for dependency management
    if [ "${SEED_PIPENV_PREINSTALLED:-}" != "1" ]; then  # bench: installed once, untimed
        pip3 install pipenv
    fi
    # generate requirements file from Pipfile.lock
    pipenv requirements > requirements.txt  # bench: was `pipenv lock --requirements`
    # install the project dependencies inside target/python folder
    pip3 install --target=target/python -r requirements.txt
}

function copy_source_files() {
    # recursively copy all the source files to target/python folder
    for package in ${SEED_PACKAGES:-emrlauncher/}; do  # bench: the fixture's own packages
        cp -R "$package" target/python
    done
}

function package() {
    # recursively zip contents inside target folder
    cd target/ && zip -r ${PACKAGE_NAME} .
}

cleanup
install_dependencies
copy_source_files
package
