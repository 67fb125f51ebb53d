//! Byte strings as TensorFlow string elements.
//!
//! TensorFlow's strings are bytes (an encoded JPEG is not UTF-8), but the `tensorflow` crate's
//! only string element type is `String`, which must hold UTF-8 (tensorflow/rust#422). [`Bytes`]
//! is the element type for what is not text: it is packed into TensorFlow's `TF_TString`s the
//! way the crate packs a `String`, from the bytes as they are, and unpacked without a UTF-8 check.

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_void};
use std::fmt;

use tensorflow::{DataType, Tensor, TensorType};
use tensorflow_sys as tf;

/// One element of a DT_STRING tensor holding arbitrary bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// A [N] string tensor of byte strings (encoded images, serialized protos).
pub fn tensor(items: &[Vec<u8>]) -> Tensor<Bytes> {
    let mut t = Tensor::<Bytes>::new(&[items.len() as u64]);
    for (slot, bytes) in t.iter_mut().zip(items) {
        *slot = Bytes(bytes.clone());
    }
    t
}

/// The layout of `count` `TF_TString`s, as the crate allocates them for `String` tensors.
fn tstring_layout(count: usize) -> Layout {
    let size = std::mem::size_of::<tf::TF_TString>() * count;
    Layout::from_size_align(size, std::mem::align_of::<tf::TF_TString>()).expect("TF_TString layout")
}

/// Frees a tensor buffer made by [`Bytes::pack`]: every `TF_TString`, then the array.
unsafe extern "C" fn deallocate(data: *mut c_void, length: usize, _arg: *mut c_void) {
    let count = length / std::mem::size_of::<tf::TF_TString>();
    // SAFETY: `data` is the array of `count` TF_TStrings that `pack` allocated with this layout
    // and initialised; TensorFlow calls this once, when the tensor's last reference goes.
    unsafe {
        let strings = std::slice::from_raw_parts_mut(data.cast::<tf::TF_TString>(), count);
        for s in strings {
            tf::TF_StringDealloc(s);
        }
        alloc::dealloc(data.cast(), tstring_layout(count));
    }
}

impl TensorType for Bytes {
    type InnerType = tensorflow::TensorDataNoCRepr<Bytes>;

    fn data_type() -> DataType {
        DataType::String
    }

    fn zero() -> Self {
        Bytes::default()
    }

    fn one() -> Self {
        Bytes(vec![1])
    }

    fn is_repr_c() -> bool {
        false
    }

    fn unpack(data: &[u8], count: usize) -> tensorflow::Result<Vec<Self>> {
        // SAFETY: TensorFlow hands a DT_STRING tensor's buffer: `count` initialised TF_TStrings,
        // each pointing at its own `TF_StringGetSize` bytes, alive while `data` is borrowed.
        let strings = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<tf::TF_TString>(), count) };
        let bytes = |s: &tf::TF_TString| unsafe {
            // SAFETY: as above, for one element.
            std::slice::from_raw_parts(tf::TF_StringGetDataPointer(s).cast::<u8>(), tf::TF_StringGetSize(s)).to_vec()
        };
        Ok(strings.iter().map(|s| Bytes(bytes(s))).collect())
    }

    fn pack(data: &[Self], dims: &[u64]) -> tensorflow::Result<*mut tf::TF_Tensor> {
        let layout = tstring_layout(data.len().max(1));
        // SAFETY: the buffer is allocated with the TF_TString layout, every element is
        // initialised (TF_StringInit) and filled by copy (TF_StringCopy) before TensorFlow sees
        // the tensor, and `deallocate` frees it with the same layout. `dims` outlives the call.
        unsafe {
            let buffer = alloc::alloc(layout);
            if buffer.is_null() {
                alloc::handle_alloc_error(layout);
            }
            let strings = std::slice::from_raw_parts_mut(buffer.cast::<tf::TF_TString>(), data.len());
            for (s, item) in strings.iter_mut().zip(data) {
                tf::TF_StringInit(s);
                tf::TF_StringCopy(s, item.0.as_ptr().cast::<c_char>(), item.0.len());
            }
            let length = std::mem::size_of::<tf::TF_TString>() * data.len();
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            let tensor = tf::TF_NewTensor(
                tf::TF_DataType::TF_STRING,
                dims.as_ptr(),
                dims.len() as c_int,
                buffer.cast::<c_void>(),
                length,
                Some(deallocate),
                std::ptr::null_mut(),
            );
            if tensor.is_null() {
                return Err(tensorflow::Status::new_set_lossy(tensorflow::Code::Internal, "TF_NewTensor returned null"));
            }
            Ok(tensor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, ops};

    #[test]
    fn non_utf8_bytes_survive_a_session_round_trip() {
        let items = vec![vec![0xff, 0xd8, 0x00, 0x80], vec![], b"text".to_vec()];
        let mut scope = Scope::new_root_scope();
        let input = ops::Placeholder::new().dtype(DataType::String).build(&mut scope.with_op_name("in")).unwrap();
        let out = ops::Identity::new().build(input.clone(), &mut scope).unwrap();
        let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
        let fed = tensor(&items);
        let mut args = SessionRunArgs::new();
        args.add_feed(&input, 0, &fed);
        let token = args.request_fetch(&out, 0);
        session.run(&mut args).unwrap();
        let got: Tensor<Bytes> = args.fetch(token).unwrap();
        assert_eq!(got.iter().map(|b| b.0.clone()).collect::<Vec<_>>(), items);
    }
}
