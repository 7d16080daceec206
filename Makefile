# The README's two commands: `make demo` and `make test`. A thin wrapper over CMake.
BUILD ?= build
WERROR ?= OFF
CMAKE_FLAGS ?=

.PHONY: all deps build demo test clean
all: build

deps:
	@tools/setup-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DDF11_WERROR=$(WERROR) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j

demo: build
	tools/demo.sh $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure

clean:
	rm -rf $(BUILD)
