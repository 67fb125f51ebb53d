//! What goes into the graph: image folders and their in-graph decoding ([`images`]), a folder of
//! class folders split into train and val ([`split`]), the checks of encoded image files before
//! decoding ([`encoded`]), the data set
//! decoded into one tensor ([`decoded`]), the tf.data input pipeline ([`pipeline`]), TFRecord
//! shards and TFDS folders ([`records`]), Caffe-layout weight files ([`weights`]) and the import
//! of `.caffemodel` files into them ([`caffe`]).

pub mod caffe;
pub mod decoded;
pub mod encoded;
pub mod images;
pub mod pipeline;
pub mod records;
pub mod split;
pub mod weights;
