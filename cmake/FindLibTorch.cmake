# Locate LibTorch, in this order:
#   1. $LIBTORCH: an unpacked LibTorch, or the `torch` folder of a PyTorch install
#   2. Torch_DIR (CMake variable or environment variable): the folder holding TorchConfig.cmake
#   3. the PyTorch of an importable Python ($PYTHON, else python3): torch.utils.cmake_prefix_path
#   4. the system's (e.g. Debian's libtorch-dev)
# Sets TORCH_LIBRARIES, TORCH_CXX_FLAGS (via find_package) and BCE_TORCH_{DIR,LIB_DIR,VERSION,CUDA,CUDA_JSON}.

set(BCE_TORCH_SOURCE "")
set(BCE_PYTHON_TRIED "")
if(DEFINED ENV{LIBTORCH} AND NOT "$ENV{LIBTORCH}" STREQUAL "")
  if(EXISTS "$ENV{LIBTORCH}/share/cmake/Torch/TorchConfig.cmake")
    set(Torch_DIR "$ENV{LIBTORCH}/share/cmake/Torch" CACHE PATH "LibTorch CMake folder" FORCE)
    set(BCE_TORCH_SOURCE "LIBTORCH")
  elseif(EXISTS "$ENV{LIBTORCH}/__init__.py")
    message(FATAL_ERROR "BCE_LIBTORCH_NOT_FOUND: LIBTORCH is set to '$ENV{LIBTORCH}', a Python `torch` package "
                        "without LibTorch's CMake files (share/cmake/Torch/TorchConfig.cmake); Debian's python3-torch "
                        "is one: its LibTorch is the libtorch-dev package, found with LIBTORCH unset. Otherwise use "
                        "a PyTorch from PyPI (`BCE_TORCH=pypi bash scripts/setup`) or an unpacked LibTorch.")
  else()
    message(FATAL_ERROR "BCE_LIBTORCH_NOT_FOUND: LIBTORCH is set to '$ENV{LIBTORCH}', which is not a LibTorch: it "
                        "holds no share/cmake/Torch/TorchConfig.cmake. Point LIBTORCH at an unpacked LibTorch (the "
                        "folder holding include/, lib/ and share/) or at the `torch` folder of a PyTorch from PyPI.")
  endif()
elseif(Torch_DIR AND EXISTS "${Torch_DIR}/TorchConfig.cmake")
  set(BCE_TORCH_SOURCE "Torch_DIR")
elseif(DEFINED ENV{Torch_DIR} AND EXISTS "$ENV{Torch_DIR}/TorchConfig.cmake")
  set(Torch_DIR "$ENV{Torch_DIR}" CACHE PATH "LibTorch CMake folder" FORCE)
  set(BCE_TORCH_SOURCE "Torch_DIR")
else()
  if(DEFINED ENV{PYTHON} AND NOT "$ENV{PYTHON}" STREQUAL "")
    set(BCE_PYTHON "$ENV{PYTHON}")
  else()
    set(BCE_PYTHON "python3")
  endif()
  execute_process(COMMAND "${BCE_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE BCE_PY_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_VARIABLE BCE_PY_ERROR RESULT_VARIABLE BCE_PY_RESULT)
  if(NOT BCE_PY_RESULT EQUAL 0)
    # Not fatal: node-gyp sets PYTHON to its own interpreter for binding.gyp's action, so a PYTHON without torch
    # is common. The system's LibTorch is tried next; the final message names this Python if that fails too.
    string(STRIP "${BCE_PY_ERROR}" BCE_PY_ERROR)
    string(REGEX REPLACE "^.*\n" "" BCE_PY_LAST_LINE "${BCE_PY_ERROR}")
    if(BCE_PY_LAST_LINE STREQUAL "")
      set(BCE_PY_LAST_LINE "${BCE_PY_RESULT}")
    endif()
    if(DEFINED ENV{PYTHON} AND NOT "$ENV{PYTHON}" STREQUAL "")
      set(BCE_PYTHON_TRIED "PYTHON is set to '${BCE_PYTHON}', which cannot import torch (${BCE_PY_LAST_LINE}). ")
      message(STATUS "bootstrapped-ce: ${BCE_PYTHON_TRIED}Trying the system's LibTorch.")
    else()
      set(BCE_PYTHON_TRIED "Tried '${BCE_PYTHON}' (set PYTHON to choose another), which cannot import torch (${BCE_PY_LAST_LINE}). ")
    endif()
  endif()
  if(BCE_PY_RESULT EQUAL 0 AND EXISTS "${BCE_PY_PREFIX}/Torch/TorchConfig.cmake")
    set(Torch_DIR "${BCE_PY_PREFIX}/Torch" CACHE PATH "LibTorch CMake folder" FORCE)
    set(BCE_TORCH_SOURCE "python (${BCE_PYTHON})")
  else()
    set(BCE_TORCH_SOURCE "system")
  endif()
endif()

# The chosen LibTorch's own prefix first on CMake's search path: TorchConfig.cmake looks for its Caffe2 config
# and for some libraries (c10) with PATHS, which CMake searches after the system prefixes, so a PyTorch from
# PyPI on a machine that also has Debian's libtorch-dev would otherwise mix Debian's 1.13 files into the build.
if(Torch_DIR)
  get_filename_component(BCE_TORCH_PREFIX "${Torch_DIR}/../../.." ABSOLUTE)
  list(PREPEND CMAKE_PREFIX_PATH "${BCE_TORCH_PREFIX}")
endif()

# A CUDA LibTorch (PyPI's default torch wheel) makes Caffe2's public/cuda.cmake look for a CUDA toolkit, nvcc
# included, and fail without one. The addon compiles no CUDA code and calls no CUDA runtime function: the CUDA
# libraries are loaded by libtorch_cuda itself (its RUNPATH finds the nvidia-* wheels). cuda.cmake returns at
# once when the target torch::cudart exists (its include guard), so an empty torch::cudart declared here lets
# TorchConfig.cmake import everything else as usual, with or without a toolkit on the machine.
set(BCE_TORCH_CANDIDATE_LIB "")
if(Torch_DIR)
  get_filename_component(BCE_TORCH_CANDIDATE_LIB "${Torch_DIR}/../../../lib" ABSOLUTE)
endif()
file(GLOB BCE_TORCH_CUDA_FILES "${BCE_TORCH_CANDIDATE_LIB}/*torch_cuda*")
if(BCE_TORCH_CANDIDATE_LIB AND BCE_TORCH_CUDA_FILES AND NOT TARGET torch::cudart)
  add_library(torch::cudart INTERFACE IMPORTED)
  message(STATUS "bootstrapped-ce: CUDA LibTorch; no CUDA toolkit needed (the addon compiles no CUDA code)")
endif()

find_package(Torch QUIET)
if(NOT Torch_FOUND AND NOT TORCH_FOUND)
  message(FATAL_ERROR "BCE_LIBTORCH_NOT_FOUND: ${BCE_PYTHON_TRIED}No LibTorch found. Install one (Debian/Ubuntu: "
                      "`sudo apt-get install libtorch-dev`), or set LIBTORCH to an unpacked LibTorch or to the "
                      "`torch` folder of a PyTorch install, or set Torch_DIR to the folder holding TorchConfig.cmake.")
endif()

set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# Where the libraries are, which version, CPU or CUDA.
list(GET TORCH_LIBRARIES 0 BCE_FIRST_TORCH_LIB)
find_library(BCE_TORCH_CPU_LIB NAMES torch_cpu torch PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH)
if(NOT BCE_TORCH_CPU_LIB)
  find_library(BCE_TORCH_CPU_LIB NAMES torch_cpu torch)
endif()
get_filename_component(BCE_TORCH_LIB_DIR "${BCE_TORCH_CPU_LIB}" DIRECTORY)
set(BCE_TORCH_DIR "${Torch_DIR}")
if(NOT BCE_TORCH_DIR)
  set(BCE_TORCH_DIR "${TORCH_INSTALL_PREFIX}")
endif()
set(BCE_TORCH_VERSION "${Torch_VERSION}")
if(NOT BCE_TORCH_VERSION)
  set(BCE_TORCH_VERSION "unknown")
endif()
set(BCE_TORCH_CUDA 0)
set(BCE_TORCH_CUDA_JSON "false")
if(TORCH_CUDA_LIBRARIES OR "${TORCH_LIBRARIES}" MATCHES "torch_cuda|c10_cuda")
  set(BCE_TORCH_CUDA 1)
  set(BCE_TORCH_CUDA_JSON "true")
  if(CUDA_VERSION)
    set(BCE_TORCH_CUDA_JSON "\"${CUDA_VERSION}\"")
  elseif(CUDAToolkit_VERSION)
    set(BCE_TORCH_CUDA_JSON "\"${CUDAToolkit_VERSION}\"")
  endif()
endif()
# libstdc++'s dual ABI: LibTorch's flags say which one when they set it (1.13, pip wheels before 2.7); otherwise
# the compiler's default, the C++11 ABI (GCC >= 5). Not libstdc++ (MSVC, Apple's libc++): no dual ABI.
if("${TORCH_CXX_FLAGS}" MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  set(BCE_TORCH_CXX11_ABI_JSON "false")
elseif(MSVC OR APPLE)
  set(BCE_TORCH_CXX11_ABI_JSON "null")
else()
  set(BCE_TORCH_CXX11_ABI_JSON "true")
endif()
if(BCE_TORCH_CUDA)
  set(BCE_FLAVOUR "CUDA")
else()
  set(BCE_FLAVOUR "CPU")
endif()
message(STATUS "bootstrapped-ce: LibTorch ${BCE_TORCH_VERSION} (${BCE_FLAVOUR}) from ${BCE_TORCH_SOURCE}: ${BCE_TORCH_DIR}; libraries in ${BCE_TORCH_LIB_DIR}")

# Distributed training (lib/distributed.ts) runs on LibTorch's own c10d: TCPStore and ProcessGroupGloo. LibTorch
# exports them, but ProcessGroupGloo.hpp compiles only with USE_C10D_GLOO defined and Gloo's own headers present:
# PyPI's wheels ship c10d's headers without Gloo's; Debian's come from libgloo-dev. Without them the addon still
# builds and `distributed.isAvailable()` is false, with BCE_DISTRIBUTED_REASON as the reason (no semicolons in
# it: CMake would read them as list separators).
set(BCE_DISTRIBUTED 0)
set(BCE_DISTRIBUTED_REASON "")
find_path(BCE_C10D_INCLUDE_DIR torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
          HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
# Gloo's headers must be those of the Gloo this LibTorch runs (the addon allocates ProcessGroupGloo, whose layout
# they shape): the system's for the system's LibTorch (Debian's libtorch links Debian's libgloo); for any other
# LibTorch only its own include folder or an explicit GLOO_ROOT, never a system Gloo of another version.
if(BCE_TORCH_SOURCE STREQUAL "system")
  find_path(BCE_GLOO_INCLUDE_DIR gloo/config.h HINTS ${TORCH_INCLUDE_DIRS} "$ENV{GLOO_ROOT}/include")
else()
  find_path(BCE_GLOO_INCLUDE_DIR gloo/config.h HINTS ${TORCH_INCLUDE_DIRS} "$ENV{GLOO_ROOT}/include" NO_DEFAULT_PATH)
endif()
find_library(BCE_GLOO_LIBRARY NAMES gloo libgloo.so.0 HINTS "${BCE_TORCH_LIB_DIR}" "$ENV{GLOO_ROOT}/lib")
option(BCE_WITH_DISTRIBUTED "Build distributed training (c10d + Gloo) when Gloo's headers are found" ON)
if(NOT BCE_WITH_DISTRIBUTED)
  set(BCE_DISTRIBUTED_REASON "the addon was built with BCE_WITH_DISTRIBUTED=OFF")
elseif(NOT BCE_C10D_INCLUDE_DIR)
  set(BCE_DISTRIBUTED_REASON "this LibTorch has no c10d headers (torch/csrc/distributed/c10d/ProcessGroupGloo.hpp)")
elseif(NOT BCE_GLOO_INCLUDE_DIR)
  if(BCE_TORCH_SOURCE STREQUAL "system")
    # string(CONCAT): set() with several strings would make a CMake list (joined by semicolons).
    string(CONCAT BCE_DISTRIBUTED_REASON "the addon was built without Gloo's headers (gloo/config.h). "
                                         "Debian/Ubuntu: apt-get install libgloo-dev, then rebuild")
  else()
    string(CONCAT BCE_DISTRIBUTED_REASON "the addon was built without Gloo's headers (gloo/config.h), which this "
                                         "LibTorch does not ship (PyPI's wheels do not). Set GLOO_ROOT to the Gloo "
                                         "this LibTorch was built with (its include/ folder), then rebuild")
  endif()
else()
  set(BCE_DISTRIBUTED 1)
endif()
if(BCE_DISTRIBUTED)
  message(STATUS "bootstrapped-ce: distributed (c10d + Gloo) on; Gloo headers in ${BCE_GLOO_INCLUDE_DIR}")
else()
  message(STATUS "bootstrapped-ce: distributed off: ${BCE_DISTRIBUTED_REASON}")
endif()
