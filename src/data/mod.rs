//! What goes into the graph: image folders and their in-graph decoding ([`images`]), Caffe-layout
//! weight files ([`weights`]) and the import of `.caffemodel` files into them ([`caffe`]).

pub mod caffe;
pub mod images;
pub mod weights;
pub mod decoded;
