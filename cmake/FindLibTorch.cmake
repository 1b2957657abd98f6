# Locate LibTorch, in this order:
#   1. $LIBTORCH: an unpacked LibTorch, or the `torch` folder of a PyTorch install
#   2. Torch_DIR (CMake variable or environment variable): the folder holding TorchConfig.cmake
#   3. the PyTorch of an importable Python ($PYTHON, else python3): torch.utils.cmake_prefix_path
#   4. the system's (e.g. Debian's libtorch-dev)
# Sets TORCH_LIBRARIES, TORCH_CXX_FLAGS (via find_package) and BCE_TORCH_{DIR,LIB_DIR,VERSION,CUDA,CUDA_JSON}.

set(BCE_TORCH_SOURCE "")
if(DEFINED ENV{LIBTORCH} AND NOT "$ENV{LIBTORCH}" STREQUAL "")
  if(EXISTS "$ENV{LIBTORCH}/share/cmake/Torch/TorchConfig.cmake")
    set(Torch_DIR "$ENV{LIBTORCH}/share/cmake/Torch" CACHE PATH "LibTorch CMake folder" FORCE)
    set(BCE_TORCH_SOURCE "LIBTORCH")
  else()
    message(FATAL_ERROR "BCE_LIBTORCH_NOT_FOUND: LIBTORCH is set to '$ENV{LIBTORCH}', which holds no "
                        "share/cmake/Torch/TorchConfig.cmake. Point it at an unpacked LibTorch or at the "
                        "`torch` folder of a PyTorch install.")
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
                  ERROR_QUIET RESULT_VARIABLE BCE_PY_RESULT)
  if(BCE_PY_RESULT EQUAL 0 AND EXISTS "${BCE_PY_PREFIX}/Torch/TorchConfig.cmake")
    set(Torch_DIR "${BCE_PY_PREFIX}/Torch" CACHE PATH "LibTorch CMake folder" FORCE)
    set(BCE_TORCH_SOURCE "python (${BCE_PYTHON})")
  else()
    set(BCE_TORCH_SOURCE "system")
  endif()
endif()

find_package(Torch QUIET)
if(NOT Torch_FOUND AND NOT TORCH_FOUND)
  message(FATAL_ERROR "BCE_LIBTORCH_NOT_FOUND: no LibTorch found. Install one (Debian/Ubuntu: "
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
if(BCE_TORCH_CUDA)
  set(BCE_FLAVOUR "CUDA")
else()
  set(BCE_FLAVOUR "CPU")
endif()
message(STATUS "bootstrapped-ce: LibTorch ${BCE_TORCH_VERSION} (${BCE_FLAVOUR}) from ${BCE_TORCH_SOURCE}: ${BCE_TORCH_DIR}; libraries in ${BCE_TORCH_LIB_DIR}")
