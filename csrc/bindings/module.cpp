// pyspec._core: one module, one register_x() per bound class.
#include "bindings/bindings.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyspec's C++ engine (private; use the pyspec package)";
    pyspec::register_errors(m);
    pyspec::register_model(m);
    pyspec::register_verify(m);
    pyspec::register_drafters(m);
    pyspec::register_engine(m);
    pyspec::register_batch_engine(m);
    pyspec::register_build_info(m);
}
