/* pickle.h — extracts the tensor table from the data.pkl of a torch.save'd state dict.
   A pickle is a program; running an arbitrary one means running arbitrary code. This reader is instead a
   small stack machine that knows only the opcodes torch.save emits for a state dict and only the handful of
   globals it names (OrderedDict, the tensor/parameter rebuild functions, the storage types). It calls
   nothing: "calling" a whitelisted global just builds a plain record. Any other opcode or global is an
   error that names it, and stack, memo, object count and string sizes are bounded so that a hostile file
   can cost only time and memory proportional to its size. */
#ifndef ELANSR_LOADER_PICKLE_H
#define ELANSR_LOADER_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include "elansr.h"

#define ELAN_PK_MAX_DIMS 8

typedef enum {
    ELAN_DT_F32 = 0,
    ELAN_DT_F64,
    ELAN_DT_F16,
    ELAN_DT_BF16,
    ELAN_DT_I64,
    ELAN_DT_I32
} elan_dtype;

size_t elan_dtype_size(elan_dtype t);
const char *elan_dtype_name(elan_dtype t); /* "float32", "int64", ... */

/* One entry of the state dict, as torch._utils._rebuild_tensor_v2 describes it. Sizes and offsets are in
   elements of dtype; nothing here has been checked against the storage bytes yet (that is the caller's
   job, since only it has the archive). */
typedef struct {
    char *name;               /* the dict key, NUL-terminated (keys with NUL bytes are refused) */
    elan_dtype dtype;         /* of the storage */
    int ndim;                 /* 0..ELAN_PK_MAX_DIMS */
    int64_t shape[ELAN_PK_MAX_DIMS];
    int64_t stride[ELAN_PK_MAX_DIMS];
    char *storage_key;        /* the archive holds its bytes in "<prefix>data/<storage_key>" */
    int64_t storage_offset;   /* first element of the tensor inside the storage */
    int64_t storage_numel;    /* elements the persistent id says the storage has */
    size_t numel;             /* product of shape (1 for ndim 0), overflow-checked */
} elan_pk_tensor;

typedef struct {
    elan_pk_tensor *t;
    size_t n;
} elan_pk_tensors;

/* Runs the restricted VM over data[0..size) and returns the tensors of the state dict: the dict under
   "params", else "params_ema", else "state_dict", else the top-level dict itself; non-tensor values are
   skipped, an empty result is an error. `label` (the checkpoint path) starts every message.
   On failure *out is left empty. */
elansr_status elan_pickle_tensors(const char *label, const uint8_t *data, size_t size, elan_pk_tensors *out);
void elan_pickle_free(elan_pk_tensors *ts); /* safe on a zeroed or already freed list */

#endif
